"""The block latency table at scale (issue 22 item 3): blocks of one structure are measured once and pooled,
rounds stop once every class's interval is tight (or the time share is spent, and it is flagged), and the
savings of a plan are checked for additivity against the plan measured as a whole."""

import json

import numpy as np
import pytest
import torch

from pipeline.drop.blocks import droppable_blocks
from pipeline.drop.latency_table import (
    SavingsSettled,
    additivity,
    block_classes,
    block_latency_table,
    cache_key,
    format_table,
    interval_is_tight,
    saving_interval,
    time_candidate_sets,
)
from pipeline.measure import LatencySettings
from pipeline.models import create_model
from pipeline.preprocess import default_preprocess


def test_blocks_of_the_same_structure_form_one_class():
    """ResNet-34 at 224 px: 16 droppable blocks, 7 structures (each stage's first block, then its repeats)."""
    model = create_model("resnet34").eval()
    classes = block_classes(model, droppable_blocks(model), (3, 224, 224))
    assert len(classes) == 16 and len(set(classes.values())) == 7
    assert {name for name, rep in classes.items() if rep == "layer3.1"} == {f"layer3.{i}" for i in range(1, 6)}
    assert classes["layer3.0"] == "layer3.0" and classes["layer1.2"] == "layer1.0"  # layer1 keeps its shape
    cifar = create_model("resnet20").eval()  # 28 px: 9 blocks, 5 structures
    assert len(set(block_classes(cifar, droppable_blocks(cifar), (1, 28, 28)).values())) == 5


def test_a_saving_is_the_trimmed_mean_of_round_differences_with_its_interval():
    rng = np.random.default_rng(0)
    full = list(10 + rng.normal(0, 0.05, 40))
    without = [f - 1.0 + rng.normal(0, 0.05) for f in full]  # saves 1 ms, measured well
    interval = saving_interval(full, without)
    assert interval["rounds"] == 40 and interval["low_ms"] < interval["saving_ms"] < interval["high_ms"]
    assert abs(interval["saving_ms"] - 1.0) < 0.05 and interval_is_tight(interval, 10.0)
    noisy = [f - 0.3 + rng.normal(0, 1.0) for f in full[:6]]  # a small saving under heavy noise: still open
    assert not interval_is_tight(saving_interval(full[:6], noisy), 10.0)
    nothing = [f + rng.normal(0, 0.01) for f in full]  # surely below 1 % of the model: decided, it saves nothing
    assert interval_is_tight(saving_interval(full, nothing), 10.0)
    settled = SavingsSettled(["a", "b"])
    assert settled({"full": full, "a": without, "b": nothing}) and not settled(
        {"full": full[:6], "a": noisy, "b": noisy}
    )
    assert saving_interval([1.0], [0.5])["noise_ms"] == float("inf")  # one round says nothing about noise


def test_the_table_measures_one_block_per_class_and_pools_the_rest():
    torch.manual_seed(0)
    model = create_model("resnet20").eval()
    blocks = droppable_blocks(model)
    settings = LatencySettings(threads=1, warmup=2, runs=5, rounds=4, max_seconds=0.2)
    key = cache_key("resnet20", "cpu", settings, (1, 28, 28))
    table = block_latency_table(model, default_preprocess(1, 28, 28), blocks, settings, key, seconds=5)
    assert table["classes"] == 5 and table["rounds"] == 4 and table["format"].endswith("-v3")
    rows = {row["block"]: row for row in table["blocks"]}
    assert [row["block"] for row in table["blocks"]] == [b.name for b in blocks]
    for row in rows.values():
        measured = rows[row["class"]]
        assert measured["class"] == row["class"] and row["saving_ms"] == measured["saving_ms"]
        assert row["saving_low_ms"] <= row["saving_ms"] <= row["saving_high_ms"]
        assert isinstance(row["interval_tight"], bool) and row["class_size"] >= 1
    assert rows["layer1.2"]["class"] == "layer1.0" and rows["layer1.0"]["class_size"] == 3
    assert set(table["flagged_classes"]) == {row["class"] for row in rows.values() if not row["interval_tight"]}
    text = format_table(table)
    assert "5 block classes" in text and "= layer1.0" in text


@pytest.mark.parametrize(
    "full_ms, dropped_ms, gap",
    [(10.0, 7.0, 0.0), (10.0, 8.0, 0.5), (10.0, 10.5, None)],  # adds up; sums to 1.5x the measured; nothing saved
)
def test_additivity_compares_the_summed_savings_with_the_measured_plan(full_ms, dropped_ms, gap):
    table = {
        "blocks": [{"block": "a", "saving_ms": 1.0}, {"block": "b", "saving_ms": 2.0}, {"block": "c", "saving_ms": 5}]
    }
    checked = additivity(table, ["a", "b"], full_ms, dropped_ms)
    assert checked["summed_saving_ms"] == 3.0 and checked["measured_saving_ms"] == full_ms - dropped_ms
    assert checked["additivity_gap"] == (None if gap is None else pytest.approx(gap))
    assert additivity(table, [], 10.0, 10.0)["additivity_gap"] is None  # no plan, nothing to check


def test_candidate_sets_of_one_class_are_timed_once():
    """After layer1.0 goes, dropping layer1.1 or layer1.2 leaves the same network: one timing serves both."""
    torch.manual_seed(0)
    model = create_model("resnet20").eval()
    names = [block.name for block in droppable_blocks(model)]
    settings = LatencySettings(threads=1, warmup=2, runs=5, rounds=3, max_seconds=0.2)
    timed = time_candidate_sets(model, model, ["layer1.0"], names[1:], default_preprocess(1, 28, 28), settings, 5)
    assert set(timed) == {"full", "current", *names[1:]} and all(ms > 0 for ms in timed.values())
    assert timed["layer1.1"] == timed["layer1.2"] and timed["layer3.1"] == timed["layer3.2"]
    assert timed["layer2.0"] != timed["layer2.1"]  # a projection block and an identity one: timed apart


def test_a_table_a_fallback_measured_is_not_served_for_the_runtime_asked_for(tmp_path, monkeypatch):
    """Issue 23 item 7: a device without TensorRT times the table with onnxruntime; the cached table must not be
    reused as a TensorRT table once the device has it (the key's runtime is what was asked, runtime_used what ran)."""
    from pipeline.drop import latency_table

    settings = LatencySettings(runtime="tensorrt", source="remote", host="me@device")
    key = cache_key("resnet8", "jetson", settings, (1, 28, 28))
    cache = tmp_path / "table.json"
    stored = {**key, "runtime_used": "onnxruntime", "settings": settings.to_dict(), "blocks": []}
    cache.write_text(json.dumps(stored))
    measured = []
    monkeypatch.setattr(latency_table, "block_latency_table", lambda *args: measured.append(1) or {**key, "blocks": []})
    table, cached = latency_table.load_or_measure(cache, None, None, [], settings, key)
    assert not cached and measured == [1]  # measured again, not the fallback's figures
    cache.write_text(json.dumps({**stored, "runtime_used": "tensorrt"}))
    assert latency_table.load_or_measure(cache, None, None, [], settings, key)[1] is True
