"""Block dropping (PRACTISE): block graph, adapters and their exact fusion for every registry architecture,
the measured latency table on real ONNX Runtime, the greedy selection, the filter-pruning baseline and the
`pipeline drop` command end to end."""

import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from conftest import invoke_cli

from pipeline.drop.adapters import AdaptedConv, adapter_parameters, fuse_adapters, insert_adapters
from pipeline.drop.blocks import DroppedBlock, conv_count, droppable_blocks, without_blocks
from pipeline.drop.filter_prune import channel_counts, filter_prune
from pipeline.drop.latency_table import cache_key, load_or_measure
from pipeline.drop.select import LatencyBudget, greedy_drop
from pipeline.errors import PipelineError
from pipeline.export import export_onnx
from pipeline.measure import LatencySettings
from pipeline.models import create_model, get_spec, list_models
from pipeline.models.checkpoint import save_checkpoint
from pipeline.models.load import load_model
from pipeline.preprocess import default_preprocess

WITH_BLOCKS = [name for name in list_models() if get_spec(name).family != "lenet"]


def _shape(arch: str) -> tuple[int, int, int]:
    channels, height, _ = get_spec(arch).default_input
    return (channels, 64, 64) if height > 64 else (channels, height, height)  # small inputs keep tests fast


def _trained_like(arch: str, seed: int = 0) -> nn.Module:
    """A random model scaled like a trained one: BatchNorm statistics calibrated on inputs and small gamma on
    each block's last BatchNorm (trained ResNets have small residual-branch gains). Random nets without this
    blow activations up to O(100) across 16 blocks, where fp32 rounding alone exceeds 1e-5."""
    torch.manual_seed(seed)
    model = create_model(arch)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average: one calibration batch sets the statistics
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    for block in droppable_blocks(model):
        norms = [
            m
            for name, m in model.get_submodule(block.name).named_modules()
            if isinstance(m, nn.BatchNorm2d) and "downsample" not in name
        ]
        norms[-1].weight.data.uniform_(0.1, 0.5)
    model.train()
    with torch.no_grad():
        model(torch.randn(16, *_shape(arch)))
    return model.eval()


def test_block_graph_lists_residual_blocks_of_every_family():
    counts = {name: len(droppable_blocks(create_model(name))) for name in list_models()}
    assert counts["lenet5"] == 0 and counts["lenet5-half"] == 0
    assert counts["resnet20"] == 9 and counts["resnet8"] == 3 and counts["resnet34n"] == 16
    assert counts["resnet18"] == 8 and counts["resnet34"] == 16 and counts["resnet50"] == 16
    assert counts["mobilenet_v2"] == 10  # the stride-1, equal-channel inverted residuals only
    kinds = {b.name: b.kind for b in droppable_blocks(create_model("resnet20"))}
    assert kinds["layer2.0"] == "projection" and kinds["layer2.1"] == "identity"
    assert {b.body_convs for b in droppable_blocks(create_model("resnet50"))} == {3}


def test_dropping_an_identity_block_of_a_resnet_is_exactly_the_identity():
    model = _trained_like("resnet20")
    block = model.layer2.get_submodule("1")
    x = torch.relu(torch.randn(2, 32, 14, 14))  # block inputs are post-ReLU
    pruned = without_blocks(model, ["layer2.1"])
    assert isinstance(pruned.layer2[1], DroppedBlock) and not isinstance(model.layer2[1], DroppedBlock)
    assert torch.equal(pruned.layer2[1](x), x) and not torch.allclose(block(x), x)
    assert pruned.dropped_blocks == ["layer2.1"]
    with pytest.raises(PipelineError, match="not a droppable block"):
        without_blocks(model, ["layer9.9"])


@pytest.mark.parametrize("arch", WITH_BLOCKS)
def test_adapters_fold_exactly_and_the_onnx_loses_exactly_the_dropped_convs(arch, tmp_path):
    model = _trained_like(arch)
    blocks = droppable_blocks(model)
    chosen = [blocks[0], blocks[len(blocks) // 2], blocks[-1]]
    pruned = without_blocks(model, [b.name for b in chosen])
    x = torch.randn(4, *_shape(arch))
    with torch.no_grad():
        plain = pruned(x)
    adapters = insert_adapters(pruned, _shape(arch))
    assert adapters and all(isinstance(pruned.get_submodule(name), AdaptedConv) for name in adapters)
    with torch.no_grad():
        assert torch.equal(pruned(x), plain)  # identity initialisation changes nothing
        for weight in adapter_parameters(pruned):
            weight.add_(0.05 * torch.randn_like(weight))  # as if trained
        unfused = pruned(x)
        fused = fuse_adapters(pruned)
        assert not any(isinstance(m, AdaptedConv) for m in fused.modules())
        assert (fused(x) - unfused).abs().max().item() <= 1e-5
        assert not torch.allclose(unfused, plain, atol=1e-3)  # the adapters did change the function
    removed = sum(b.body_convs for b in chosen)
    assert conv_count(fused) == conv_count(model) - removed
    preprocess = default_preprocess(*_shape(arch))
    # the deployed (dynamo) exporter for one CIFAR and one torchvision family; TorchScript, six times faster, for
    # the rest (test_export covers the dynamo export of every architecture; what is tested here is the fold)
    exporter = "auto" if arch in ("resnet20", "resnet18") else "torchscript"
    export_onnx(model, preprocess, tmp_path / "full.onnx", exporter=exporter)
    export_onnx(fused, preprocess, tmp_path / "dropped.onnx", exporter=exporter)
    ops = {name: [n.op_type for n in onnx.load(tmp_path / f"{name}.onnx").graph.node] for name in ("full", "dropped")}
    assert ops["dropped"].count("Conv") == ops["full"].count("Conv") - removed
    assert "BatchNormalization" not in ops["dropped"]  # BatchNorm folded into the convolutions as well
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "dropped.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {"input": x.numpy()})[0]
    assert np.abs(onnx_out - unfused.numpy()).max() <= 1e-4


def test_adapter_fold_is_exact_in_float64():
    model = _trained_like("resnet20").double()
    pruned = without_blocks(model, ["layer1.0", "layer3.0"])
    insert_adapters(pruned, (1, 28, 28))
    x = torch.randn(3, 1, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        for weight in adapter_parameters(pruned):
            weight.add_(0.1 * torch.randn_like(weight))
        unfused = pruned(x)
        assert (fuse_adapters(pruned)(x) - unfused).abs().max().item() <= 1e-12


def test_a_dropped_checkpoint_loads_back_with_its_structure(tmp_path):
    model = _trained_like("resnet20")
    pruned = without_blocks(model, ["layer1.1", "layer3.0"])
    path = tmp_path / "dropped.pt"
    save_checkpoint(
        path,
        pruned,
        arch="resnet20",
        preprocess=default_preprocess(1, 28, 28),
        num_classes=10,
        metadata={"dropped_blocks": ["layer1.1", "layer3.0"]},
    )
    loaded = load_model(path)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), pruned(x))
    state = torch.load(path, weights_only=True)
    state["metadata"]["dropped_blocks"] = ["layer1.1"]  # structure no longer matches the weights
    torch.save(state, path)
    with pytest.raises(PipelineError, match="does not match resnet20 without blocks"):
        load_model(path)
    # models/ imports no technique: a process that never imported drop's reader says which import registers it
    import subprocess
    import sys

    code = f"from pipeline.models.load import load_model; load_model({str(path)!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (
        done.returncode != 0 and "no reader for it is loaded" in done.stderr and "pipeline.drop.blocks" in done.stderr
    )


def test_latency_table_is_measured_on_onnxruntime_and_cached(tmp_path):
    model = _trained_like("resnet8")
    blocks = droppable_blocks(model)
    settings = LatencySettings(threads=1, warmup=2, runs=10, rounds=2, max_seconds=0.5)
    key = cache_key("resnet8", "cpu", settings, (1, 28, 28))
    cache = tmp_path / "table.json"
    table, cached = load_or_measure(cache, model, default_preprocess(1, 28, 28), blocks, settings, key)
    assert not cached and key["runtime"] == "onnxruntime" and key["runtime_version"]
    assert [row["block"] for row in table["blocks"]] == [b.name for b in blocks]
    assert table["full_ms"] > 0 and table["cv"] >= 0 and len(table["full_round_medians_ms"]) == 2
    for row in table["blocks"]:
        assert row["latency_without_ms"] > 0 and row["noise_ms"] >= 0 and "within_noise" in row
    again, cached = load_or_measure(cache, model, default_preprocess(1, 28, 28), blocks, settings, key)
    assert cached and again["full_ms"] == table["full_ms"]
    other = {**key, "runtime_version": "0.0"}  # another onnxruntime: measure again
    _, cached = load_or_measure(cache, model, default_preprocess(1, 28, 28), blocks, settings, other)
    assert not cached


def _table(savings: dict, full: float = 1.0) -> dict:
    return {"full_ms": full, "blocks": [{"block": name, "saving_ms": s} for name, s in savings.items()]}


def _additive_timer(savings: dict, extra: dict | None = None):
    """Set latencies as a runtime would report them: 1 ms minus the savings, plus an interaction term."""

    def measure(dropped, candidates):
        def latency(names):
            return 1.0 - sum(savings[n] for n in names) + (extra or {}).get(frozenset(names), 0.0)

        return {"full": 1.0, "current": latency(dropped), **{c: latency(dropped + [c]) for c in candidates}}

    return measure


def test_greedy_drop_takes_lowest_recoverability_per_saving_and_rescoring_each_step():
    calls = []

    def recoverability(dropped):
        calls.append(list(dropped))
        # "b" is cheap alone, but expensive once "a" is gone: scores must be recomputed after each drop
        cost = {"a": 0.1, "b": 0.2, "c": 0.5, "d": 0.05}
        return sum(cost[n] for n in dropped) + (1.0 if {"a", "b"} <= set(dropped) else 0.0)

    savings = {"a": 0.2, "b": 0.2, "c": 0.2, "d": -0.01}
    result = greedy_drop(_table(savings), LatencyBudget(reduction=0.35), recoverability, _additive_timer(savings))
    assert result["dropped"] == ["a", "c"]  # "d" saves nothing; "b" became the worst after "a"
    assert ["d"] not in calls and len(result["steps"]) == 2
    assert result["steps"][0]["saving_source"] == "table" and result["steps"][1]["saving_source"] == "measured"
    assert result["verifications"][0]["measured_reduction"] == pytest.approx(0.4)


def test_greedy_drop_uses_measured_savings_when_they_do_not_add_up():
    savings = {"a": 0.2, "b": 0.15, "c": 0.1}
    # with "a" gone, removing "b" saves almost nothing more (the table's 0.15 does not add up)
    timer = _additive_timer(savings, {frozenset({"a", "b"}): 0.14})
    result = greedy_drop(_table(savings), LatencyBudget(reduction=0.25), lambda dropped: 1.0, timer)
    assert result["dropped"] == ["a", "c"]  # b's measured marginal saving (0.01) scores it out
    with pytest.raises(PipelineError, match="cannot reach"):
        greedy_drop(_table({"a": 0.1}), LatencyBudget(reduction=0.5), lambda d: 0.0, _additive_timer({"a": 0.1}))
    already = greedy_drop(_table(savings), LatencyBudget(ms=2.0), lambda d: 1.0, timer)
    assert already["dropped"] == [] and already["verifications"][0]["full_ms"] == 1.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "exactly one"),
        ({"reduction": 0.3, "ms": 1.0}, "exactly one"),
        ({"reduction": 1.5}, "between 0 and 1"),
        ({"ms": -1.0}, "positive"),
    ],
)
def test_latency_budget_is_validated(kwargs, message):
    with pytest.raises(PipelineError, match=message):
        LatencyBudget(**kwargs)


def test_filter_pruning_baseline_rounds_channels_to_multiples_of_8():
    model = _trained_like("resnet20")
    pruned = filter_prune(model, (1, 28, 28), 0.5)
    counts = channel_counts(pruned)
    assert all(c % 8 == 0 for c in counts) and sum(counts) < sum(channel_counts(model))
    assert pruned(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())


STEPS = ("--budget", "smoke", "--steps", "2")  # 64 transfer-set images: enough to fine-tune; time budgets: test_build


@pytest.mark.slow
def test_pipeline_drop_end_to_end_on_the_embedded_teacher(tmp_path):
    run = tmp_path / "run"
    result = invoke_cli("drop", *STEPS, "--latency-reduction", "0.1", "--out", str(run), "--json", "--eval", "none")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    manifest = json.loads((run / "manifest.json").read_text())
    assert list(manifest["stages"]) == ["synthesize", "drop", "export", "bench"]
    drop = manifest["stages"]["drop"]["metrics"]
    assert drop["dropped_blocks"] and drop["fused_max_abs_diff"] <= 1e-5 and drop["real_images"] == 0
    assert drop["verifications"][-1]["dropped_ms"] <= drop["verifications"][-1]["limit_ms"]
    table = json.loads((run / "drop" / "latency_table.json").read_text())
    assert len(table["blocks"]) == 9 and table["classes"] == 5 and table["runtime"] == "onnxruntime"
    assert table["additivity"]["dropped"] == drop["dropped_blocks"]  # the plan measured whole against the table
    assert drop["additivity_gap"] == table["additivity"]["additivity_gap"]
    assert list((run / "cache").glob("latency-resnet20-cpu-onnxruntime-*.json"))
    rows = {row["model"]: row for row in summary["rows"]}
    assert rows["student"]["dropped_blocks"] == drop["dropped_blocks"]
    convs = {name: [n.op_type for n in onnx.load(rows[name]["onnx"]).graph.node].count("Conv") for name in rows}
    assert convs["student"] == convs["teacher"] - 2 * len(drop["dropped_blocks"])
    again = invoke_cli("drop", *STEPS, "--latency-reduction", "0.1", "--out", str(run), "--eval", "none")
    assert again.returncode == 0 and again.stderr.count("up to date, skipped") == 4


@pytest.mark.parametrize(
    "args, message",
    [
        (["--budget", "smoke"], "needs a latency budget"),
        (
            ["--teacher", "embedded:lenet5-fmnist", "--latency-reduction", "0.3", "--budget", "smoke"],
            "no droppable residual blocks",
        ),
        (["--latency-reduction", "3", "--budget", "smoke"], "between 0 and 1"),
    ],
)
def test_pipeline_drop_user_errors_are_one_line(tmp_path, args, message):
    result = invoke_cli("drop", *args, "--out", str(tmp_path / "run"), "--eval", "none")
    assert result.returncode != 0 and message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_build_plans_the_drop_stage_only_when_asked():
    from pipeline.recipes.drop_specs import drop_budget
    from pipeline.recipes.options import BuildOptions
    from pipeline.recipes.plan import choose_recipe, stages_to_run
    from pipeline.targets import load_target

    def planned(options: BuildOptions, until: str) -> list[str]:
        return stages_to_run(choose_recipe(options, cpu), options, until, cpu)

    cpu = load_target("cpu")
    assert planned(BuildOptions(), "bench") == ["synthesize", "distill", "export", "bench"]
    assert planned(BuildOptions(drop_blocks=("layer1.1",)), "bench") == [
        "synthesize",
        "distill",
        "drop",
        "export",
        "bench",
    ]
    assert planned(BuildOptions(recipe="drop"), "bench") == ["synthesize", "drop", "export", "bench"]
    assert planned(BuildOptions(recipe="drop", images="few/"), "drop") == ["drop"]
    assert drop_budget(BuildOptions(latency_ms=2.0), cpu) == LatencyBudget(ms=2.0)
    from dataclasses import replace

    assert drop_budget(BuildOptions(), replace(cpu, latency_budget_ms=0.5)) == LatencyBudget(ms=0.5)
    with pytest.raises(PipelineError, match="needs a latency budget"):
        drop_budget(BuildOptions(), cpu)


@pytest.mark.slow
def test_build_with_a_latency_budget_searches_the_teacher_and_the_distilled_student(tmp_path):
    """`build --latency-reduction` runs the budget search with two bases: the teacher and the distilled student
    (fp32 only here, to keep the test short; tests/test_search.py covers precisions)."""
    run = tmp_path / "run"
    result = invoke_cli(
        "build",
        "--budget",
        "smoke",
        "--steps",
        "10",
        "--latency-reduction",
        "0.15",
        "--student",
        "resnet8",
        "--precision",
        "fp32",
        "--out",
        str(run),
        "--json",
        "--eval",
        "none",
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert list(manifest["stages"]) == ["synthesize", "distill", "search", "export", "bench"]
    search = json.loads((run / "search" / "search.json").read_text())
    assert set(search["bases"]) == {"teacher", "student"} and search["bases"]["student"]["arch"] == "resnet8"
    assert {r["base"] for r in search["candidates"].values()} == {"teacher", "student"}
    assert manifest["stages"]["search"]["inputs"]["student"]["path"].endswith("distill/student.pt")
    # the plan counts the search (it once left it out, and a jetson build ran 29 min on a 14 min ETA)
    planned = {stage["name"]: stage for stage in manifest["plan"]["stages"]}
    assert planned["search"]["planned_s"] > 0 and "search" not in manifest["plan"]["unplanned"]
    assert set(manifest["stages"]["search"]["metrics"]["phase_s"]) == set(planned["search"]["phases_s"])
    rows = {row["model"]: row for row in json.loads(result.stdout)["rows"]}
    assert rows["student"]["dropped_blocks"] == search["chosen"]["dropped"]
    assert any("budget search: Chosen:" in note for note in json.loads(result.stdout)["notes"])
