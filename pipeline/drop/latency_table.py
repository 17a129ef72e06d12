"""Block latency table: what removing each block saves on the target's runtime, *measured*.

Each variant (the full model, and the model without one block) is exported to ONNX as it would be
deployed and timed with the measurement layer's protocol (`pipeline.measure`) on the target's runner, batch
and input size, in interleaved rounds (full, -b1, -b2, ..., then again in a new order) so a slow drift of the
machine shifts every variant alike instead of biasing the savings.

Blocks of the same structure (kind, module class, convolutions, parameters, input and output shape: channels,
stride and spatial size) cost the same, so one representative per class is measured and every block of the
class gets its saving: a ResNet-34 has 16 droppable blocks in 7 classes. A saving is the 20 % trimmed mean of
the per-round differences (full - without), with its bootstrap interval (the gate's statistic). Rounds are added
while a class's 95 % interval is wider than the decision needs (half-width above a quarter of its saving, unless
the whole interval is within 1 % of the full model: it saves nothing worth a drop), up to the settings' rounds
or the table's time share; a class still loose then is flagged. After the selection, the drop stage checks
additivity: the sum of the table's savings of the dropped blocks against the measured saving of them together.
"""

import math
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from pipeline.drop.blocks import Block, droppable_blocks, without_blocks
from pipeline.export import export_onnx
from pipeline.fileio import atomic_write_json
from pipeline.measure import (
    MIN_ROUNDS,
    LatencySettings,
    RoundsPolicy,
    bootstrap_ci,
    example_input,
    runtime_version,
    time_onnx_models,
)
from pipeline.preprocess import Preprocess
from pipeline.progress import log

TABLE_FORMAT = "edge-pipeline/block-latency-table-v3"  # v2: pooled classes, trimmed mean; v3: no idle spinning
TIGHT = 0.25  # a class's 95 % interval half-width within this share of its saving answers the question
NEGLIGIBLE = 0.01  # ... or the whole interval within this share of the full model: the block saves nothing
TABLE_SECONDS = 120.0  # the time share of a table's rounds after the minimum (the minimum is always made)
CHECK_SECONDS = 30.0  # the time share of the acceptance check's rounds after its minimum
ROUND_WARMUP = 3  # per model per round: its session stays open between rounds, so a few calls refill caches


def cache_key(arch: str, target: str, settings: LatencySettings, input_shape) -> dict:
    """What a cached table is valid for: the same architecture, target, runtime version, shape, threads and
    machine (the device's host name for remote measurements; its runtime version is in the table)."""
    remote = settings.source == "remote"
    return {
        "format": TABLE_FORMAT,
        "arch": arch,
        "target": target,
        "runtime": settings.runtime,
        "runtime_version": "on-device" if remote else runtime_version(settings.runtime),
        "batch": settings.batch,
        "threads": settings.threads,
        "input_shape": list(input_shape),
        "latency_source": settings.source,
        "machine": settings.host if remote else platform.node(),
    }


def time_models(
    models: dict[str, "nn.Module | Path"],
    preprocess: Preprocess,
    settings: LatencySettings,
    rounds: "int | RoundsPolicy | None" = None,
    label: str = "latency",
    enough=None,
) -> dict[str, dict]:
    """Export each torch model to a temporary ONNX file (as deployed; an ONNX path is used as it is) and time
    them interleaved (`rounds` and `enough`: the measurement layer's rounds policy)."""
    with tempfile.TemporaryDirectory(prefix="edge-pipeline-latency-") as folder:
        paths = {}
        for name, model in models.items():
            if isinstance(model, Path):
                paths[name] = model
                continue
            paths[name] = Path(folder) / f"{name.replace('/', '_')}.onnx"
            export_onnx(model, preprocess, paths[name], exporter="timing")
        example = example_input(settings, preprocess)
        return time_onnx_models(paths, settings, example, rounds or settings.rounds, label, enough)


def time_candidate_sets(
    full: "nn.Module | Path",
    model: nn.Module,
    dropped: list[str],
    candidates: list[str],
    preprocess: Preprocess,
    settings: LatencySettings,
    seconds: float | None = TABLE_SECONDS,
) -> dict[str, float]:
    """The greedy selection's measurement: median ms of the full model, of `model` without `dropped`
    ("current"), and of that model without each candidate as well, timed together, interleaved.

    Candidates of one block class leave the same network (the same structures in the same order), so one of
    them is timed for its class; rounds stop once every class's saving against "current" is tight, as the
    table's do."""
    blocks = [block for block in droppable_blocks(model) if block.name in candidates]
    classes = block_classes(model, blocks, preprocess.input_shape)
    timed_names = list(dict.fromkeys(classes.values()))
    models = {"full": full, "current": without_blocks(model, dropped)}
    models.update({name: without_blocks(model, dropped + [name]) for name in timed_names})
    policy, short_rounds, remote = _rounds_policy(settings, seconds)
    if not candidates:  # the check that accepts a plan: the project's floor of rounds for a timing claim at least
        policy = check_rounds(settings)
    timed = time_models(
        models,
        preprocess,
        short_rounds,
        policy,
        label=f"latency: {len(candidates)} candidate sets ({len(timed_names)} classes)",
        enough=None if remote else SavingsSettled(timed_names, reference="current"),
    )
    medians = {name: entry["median_ms"] for name, entry in timed.items()}
    return {**medians, **{name: medians[classes[name]] for name in candidates}}


def round_s(settings: LatencySettings, latency_ms: float, warmup: int | None = None) -> float:
    """One model's share of one interleaved round near `latency_ms`: warm-up calls (a short round's few unless
    `warmup` is given), then timed runs until `max_seconds` is spent (at least 10) or `runs` are made
    (portable/timing.py)."""
    per_call = latency_ms / 1000
    runs = settings.runs
    if settings.max_seconds:
        runs = min(runs, max(10, math.ceil(settings.max_seconds / per_call)))
    warmup = min(settings.warmup, ROUND_WARMUP) if warmup is None else warmup
    return (warmup + runs) * per_call


def session_estimate_s(settings: LatencySettings, latency_ms: float, models: int) -> float:
    """About how long an interleaved session of `models` models near `latency_ms` takes at its floor of short
    rounds (a local one; a remote device runs all its rounds). What a selection step costs before it is
    measured, and what the build's plan counts for the table and the steps (recipes/costs.py)."""
    rounds = settings.rounds if settings.source == "remote" else min(settings.rounds, MIN_ROUNDS)
    return models * rounds * round_s(settings, latency_ms)


def check_rounds(settings: LatencySettings) -> RoundsPolicy:
    """The check that accepts a drop plan: the project's floor of rounds, more up to the settings' rounds while
    its time share lasts (a 224-px pair of models takes a second a round); a remote device runs them all."""
    most = max(settings.rounds, MIN_ROUNDS)
    return RoundsPolicy.fixed(most) if settings.source == "remote" else RoundsPolicy(MIN_ROUNDS, most, CHECK_SECONDS)


def _rounds_policy(settings: LatencySettings, seconds: float | None) -> tuple[RoundsPolicy, LatencySettings, bool]:
    """A table's rounds: at least the project's floor (or the settings' count if lower), more while a saving is
    loose, up to the settings' rounds or `seconds`; short rounds (a few warm-up calls each). The device script
    waits only on the gate's question, so a remote table runs the settings' rounds."""
    remote = settings.source == "remote"
    minimum = settings.rounds if remote else min(settings.rounds, MIN_ROUNDS)
    policy = RoundsPolicy(minimum, settings.rounds, None if remote else seconds)
    return policy, replace(settings, warmup=min(settings.warmup, ROUND_WARMUP)), remote


def export_for_timing(model: nn.Module, preprocess: Preprocess, folder: Path, name: str) -> Path:
    """Export once, time many times (the full model is timed beside every candidate)."""
    path = Path(folder) / f"{name}.onnx"
    export_onnx(model, preprocess, path, exporter="timing")
    return path


def block_classes(model: nn.Module, blocks: list[Block], input_shape) -> dict[str, str]:
    """Block name -> its class's representative (the first block of the same structure in forward order)."""
    modules = dict(model.named_modules())
    shapes = {}

    def hook(name):
        def record(module, inputs, output) -> None:  # returns None: a forward hook's value would replace the output
            shapes.setdefault(name, (tuple(inputs[0].shape), tuple(output.shape)))

        return record

    handles = [modules[block.name].register_forward_hook(hook(block.name)) for block in blocks]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for handle in handles:
            handle.remove()
    representatives, classes = {}, {}
    for block in blocks:
        module = modules[block.name]
        parameters = sum(p.numel() for p in module.parameters())
        structure = (block.kind, type(module).__name__, block.body_convs, parameters, shapes.get(block.name))
        classes[block.name] = representatives.setdefault(structure, block.name)
    return classes


def saving_interval(full_rounds: list[float], without_rounds: list[float]) -> dict:
    """The saving of one variant against the full model from rounds paired by index: trimmed mean of the
    differences, its 95 % bootstrap interval, and the standard error (noise) of the differences."""
    rounds = min(len(full_rounds), len(without_rounds))
    differences = np.asarray(full_rounds[:rounds]) - np.asarray(without_rounds[:rounds])
    if rounds < 2:
        saving = float(differences.mean()) if rounds else float("nan")
        return {"saving_ms": saving, "low_ms": -math.inf, "high_ms": math.inf, "noise_ms": math.inf, "rounds": rounds}
    saving, low, high = bootstrap_ci(differences)
    noise = float(differences.std(ddof=1) / math.sqrt(rounds))
    return {"saving_ms": saving, "low_ms": low, "high_ms": high, "noise_ms": noise, "rounds": rounds}


def interval_is_tight(interval: dict, full_ms: float) -> bool:
    """Whether the decision has what it needs: a saving known to a quarter, or one that is surely negligible."""
    half = (interval["high_ms"] - interval["low_ms"]) / 2
    negligible = -NEGLIGIBLE * full_ms < interval["low_ms"] and interval["high_ms"] < NEGLIGIBLE * full_ms
    return half <= TIGHT * abs(interval["saving_ms"]) or negligible


class SavingsSettled:
    """`enough` for a table's rounds: every measured class's saving against `reference` (the full model, or the
    current one in the selection's later steps) has a tight interval (timing.interleaved_rounds)."""

    def __init__(self, names: list[str], reference: str = "full"):
        self.names, self.reference = names, reference

    def __call__(self, medians: dict[str, list[float]]) -> bool:
        base = medians[self.reference]
        if len(base) < 2:
            return False
        base_ms = float(np.median(base))
        return all(interval_is_tight(saving_interval(base, medians[name]), base_ms) for name in self.names)


def block_latency_table(
    model: nn.Module,
    preprocess: Preprocess,
    blocks: list[Block],
    settings: LatencySettings,
    key: dict,
    seconds: float | None = TABLE_SECONDS,
) -> dict:
    """Measure the full model and one representative of each block class, pooled over the class."""
    classes = block_classes(model, blocks, preprocess.input_shape)
    measured = list(dict.fromkeys(classes.values()))
    log(
        f"drop: measuring {len(blocks)} blocks in {len(measured)} classes of the same structure on "
        f"{settings.runtime} (batch {settings.batch}, threads {settings.threads}, up to {settings.rounds} "
        "interleaved rounds)"
    )
    with tempfile.TemporaryDirectory(prefix="edge-pipeline-latency-") as folder:
        variants = {"full": export_for_timing(model, preprocess, folder, "full")}
        for index, name in enumerate(measured):
            variants[name] = export_for_timing(without_blocks(model, [name]), preprocess, folder, f"without-{index}")
        started = time.monotonic()
        table = _measure_table(variants, preprocess, blocks, classes, settings, key, seconds)
        return {**table, "table_s": round(time.monotonic() - started, 1)}


def _measure_table(
    variants: dict[str, Path],
    preprocess: Preprocess,
    blocks: list[Block],
    classes: dict[str, str],
    settings: LatencySettings,
    key: dict,
    seconds: float | None,
) -> dict:
    measured = [name for name in variants if name != "full"]
    policy, short_rounds, remote = _rounds_policy(settings, seconds)
    example = example_input(settings, preprocess)
    enough = None if remote else SavingsSettled(measured)
    timed = time_onnx_models(variants, short_rounds, example, policy, "block latency table", enough)
    full = timed["full"]
    intervals = {name: saving_interval(full["round_medians_ms"], timed[name]["round_medians_ms"]) for name in measured}
    rows = []
    for block in blocks:
        representative = classes[block.name]
        interval = intervals[representative]
        tight = interval_is_tight(interval, full["median_ms"])
        rows.append(
            {
                "block": block.name,
                "kind": block.kind,
                "body_convs": block.body_convs,
                "class": representative,  # the block measured for this one's class (itself if it was)
                "class_size": sum(1 for name in classes.values() if name == representative),
                "latency_without_ms": timed[representative]["median_ms"],
                "saving_ms": interval["saving_ms"],
                "saving_low_ms": interval["low_ms"],
                "saving_high_ms": interval["high_ms"],
                "noise_ms": interval["noise_ms"],
                "saving_fraction": interval["saving_ms"] / full["median_ms"],
                "interval_tight": tight,  # False: flagged, the rounds ran out before the interval was tight
                "within_noise": interval["saving_ms"] < settings.noise_factor * interval["noise_ms"],
            }
        )
    loose = sorted({row["class"] for row in rows if not row["interval_tight"]})
    if loose:
        log(f"drop: the saving of {len(loose)} block class(es) is still uncertain, flagged: {', '.join(loose)}")
    ran = full.get("measured_on") or {}
    return {
        **key,
        # what ran (a device without TensorRT falls back to onnxruntime): a cached table serves only that runtime
        "runtime_used": ran.get("runtime_used") or settings.runtime,
        "runtime_used_version": ran.get("version") or key["runtime_version"],
        "settings": settings.to_dict(),
        "measured_on": full.get("measured_on"),
        "full_ms": full["median_ms"],
        "full_round_medians_ms": full["round_medians_ms"],
        "cv": full["cv"],
        "rounds": len(full["round_medians_ms"]),
        "classes": len(measured),
        "flagged_classes": loose,
        "blocks": rows,
    }


def additivity(table: dict, dropped: list[str], full_ms: float, dropped_ms: float) -> dict:
    """The table's savings of `dropped`, summed, against the measured saving of dropping them together
    (`additivity_gap`: |measured - summed| / measured; None when nothing measurable was saved)."""
    savings = {row["block"]: row["saving_ms"] for row in table.get("blocks", [])}
    predicted = sum(savings[name] for name in dropped if name in savings)
    measured = full_ms - dropped_ms
    return {
        "dropped": list(dropped),
        "summed_saving_ms": predicted,
        "measured_saving_ms": measured,
        "additivity_gap": abs(measured - predicted) / measured if dropped and measured > 0 else None,
    }


def load_or_measure(
    cache_file: Path,
    model: nn.Module,
    preprocess: Preprocess,
    blocks: list[Block],
    settings: LatencySettings,
    key: dict,
) -> tuple[dict, bool]:
    """The cached table when its key matches (same arch, target, runtime version, shape, threads, machine)."""
    import json

    if cache_file.is_file():
        try:
            cached = json.loads(cache_file.read_text())
            if (
                {k: cached.get(k) for k in key} == key
                and cached.get("runtime_used", key["runtime"]) == key["runtime"]  # not a fallback's figures
                and cached.get("settings") == settings.to_dict()
                and [row["block"] for row in cached["blocks"]] == [b.name for b in blocks]
            ):
                return cached, True
        except (ValueError, KeyError, TypeError):
            pass  # unreadable cache: measure again
    table = block_latency_table(model, preprocess, blocks, settings, key)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cache_file, table)
    return table, False


def format_table(table: dict) -> str:
    measured = table.get("measured_on") or {}
    where = {"remote": f" on {measured.get('host')}", "proxy": f" (proxy for {measured.get('proxy_for')})"}.get(
        measured.get("source"), ""
    )
    lines = [
        f"full model: {table['full_ms']:.3f} ms median (CV {table['cv']:.3f}), {measured.get('runtime', table['runtime'])} "
        f"{measured.get('version') or table['runtime_version']}{where}, batch {table['batch']}, threads "
        f"{table['threads']}; {table.get('rounds', '?')} rounds, {table.get('classes', '?')} block classes",
        "block        kind        class         saving ms   95 % interval ms      saving %",
    ]
    for row in table["blocks"]:
        pooled = "" if row.get("class", row["block"]) == row["block"] else f"= {row['class']}"
        # a v1 table (committed results before pooling) has a noise figure, not an interval
        low, high = row.get("saving_low_ms", -math.inf), row.get("saving_high_ms", math.inf)
        lines.append(
            f"{row['block']:<12} {row['kind']:<10} {pooled:<12} {row['saving_ms']:>10.4f}   "
            f"[{low:>8.4f}, {high:>8.4f}] {100 * row['saving_fraction']:>9.1f}"
            f"{'' if row.get('interval_tight', True) else '  (flagged: interval still wide)'}"
        )
    return "\n".join(lines)
