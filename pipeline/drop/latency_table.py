"""Block latency table: what removing each block saves on the target's runtime, *measured*.

Each variant (the full model, and the model without one block) is exported to ONNX as it would be
deployed and timed with the measurement layer's protocol (`pipeline.measure`) on the target's runner, batch
and input size. Variants are timed in interleaved rounds (full, -b1, -b2, ..., then again in a new order) so a
slow drift of the machine shifts every variant alike instead of biasing the savings. The saving of a
block is the median over rounds of (full - without block); its noise is the standard error of those
differences. Blocks whose saving is within twice its noise are re-measured with more rounds.
"""

import math
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch.nn as nn

from pipeline.drop.blocks import Block, without_blocks
from pipeline.export import export_onnx
from pipeline.fileio import atomic_write_json
from pipeline.measure import LatencySettings, example_input, runtime_version, time_onnx_models
from pipeline.preprocess import Preprocess
from pipeline.progress import log

TABLE_FORMAT = "edge-pipeline/block-latency-table-v1"


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
    rounds: int | None = None,
    label: str = "latency",
) -> dict[str, dict]:
    """Export each torch model to a temporary ONNX file (as deployed; an ONNX path is used as it is) and time
    them interleaved."""
    with tempfile.TemporaryDirectory(prefix="edge-pipeline-latency-") as folder:
        paths = {}
        for name, model in models.items():
            if isinstance(model, Path):
                paths[name] = model
                continue
            paths[name] = Path(folder) / f"{name.replace('/', '_')}.onnx"
            export_onnx(model, preprocess, paths[name], exporter="timing")
        return time_onnx_models(paths, settings, example_input(settings, preprocess), rounds or settings.rounds, label)


def time_candidate_sets(
    full: "nn.Module | Path",
    model: nn.Module,
    dropped: list[str],
    candidates: list[str],
    preprocess: Preprocess,
    settings: LatencySettings,
) -> dict[str, float]:
    """The greedy selection's measurement: median ms of the full model, of `model` without `dropped`
    ("current"), and of that model without each candidate as well, timed together, interleaved."""
    models = {"full": full, "current": without_blocks(model, dropped)}
    models.update({name: without_blocks(model, dropped + [name]) for name in candidates})
    timed = time_models(models, preprocess, settings, label=f"latency: {len(candidates)} candidate sets")
    return {name: entry["median_ms"] for name, entry in timed.items()}


def export_for_timing(model: nn.Module, preprocess: Preprocess, folder: Path, name: str) -> Path:
    """Export once, time many times (the full model is timed beside every candidate)."""
    path = Path(folder) / f"{name}.onnx"
    export_onnx(model, preprocess, path, exporter="timing")
    return path


def _saving(full: list[float], without: list[float]) -> tuple[float, float]:
    differences = np.asarray(full) - np.asarray(without)
    noise = float(differences.std(ddof=1) / math.sqrt(len(differences))) if len(differences) > 1 else float("inf")
    return float(np.median(differences)), noise


def block_latency_table(
    model: nn.Module, preprocess: Preprocess, blocks: list[Block], settings: LatencySettings, key: dict
) -> dict:
    """Measure the full model and the model without each block; re-measure savings within the noise."""
    log(
        f"drop: measuring {len(blocks)} blocks on {settings.runtime} (batch {settings.batch}, "
        f"threads {settings.threads}, {settings.rounds} interleaved rounds)"
    )
    with tempfile.TemporaryDirectory(prefix="edge-pipeline-latency-") as folder:
        variants = {"full": export_for_timing(model, preprocess, folder, "full")}
        for index, block in enumerate(blocks):
            variants[block.name] = export_for_timing(
                without_blocks(model, [block.name]), preprocess, folder, f"without-{index}"
            )
        return _measure_table(variants, preprocess, blocks, settings, key)


def _measure_table(
    variants: dict[str, Path], preprocess: Preprocess, blocks: list[Block], settings: LatencySettings, key: dict
) -> dict:
    timed = time_models(variants, preprocess, settings, label="block latency table")
    full = timed["full"]
    rows = []
    noisy = []
    for block in blocks:
        saving, noise = _saving(full["round_medians_ms"], timed[block.name]["round_medians_ms"])
        rows.append(
            {
                "block": block.name,
                "kind": block.kind,
                "body_convs": block.body_convs,
                "latency_without_ms": timed[block.name]["median_ms"],
                "saving_ms": saving,
                "noise_ms": noise,
                "saving_fraction": saving / full["median_ms"],
                "remeasured": False,
            }
        )
        if saving < settings.noise_factor * noise:
            noisy.append(block)
    if noisy:
        # re-measure the doubtful blocks together with the full model, with twice the rounds
        log(f"drop: {len(noisy)} block saving(s) within the noise, re-measuring: {', '.join(b.name for b in noisy)}")
        again = time_models(
            {"full": variants["full"], **{b.name: variants[b.name] for b in noisy}},
            preprocess,
            settings,
            rounds=2 * settings.rounds,
            label="re-measuring noisy blocks",
        )
        for row in rows:
            if row["block"] in again:
                saving, noise = _saving(again["full"]["round_medians_ms"], again[row["block"]]["round_medians_ms"])
                row.update(
                    latency_without_ms=again[row["block"]]["median_ms"],
                    saving_ms=saving,
                    noise_ms=noise,
                    saving_fraction=saving / again["full"]["median_ms"],
                    remeasured=True,
                )
    for row in rows:
        row["within_noise"] = row["saving_ms"] < settings.noise_factor * row["noise_ms"]
    return {
        **key,
        "settings": settings.to_dict(),
        "measured_on": full.get("measured_on"),
        "full_ms": full["median_ms"],
        "full_round_medians_ms": full["round_medians_ms"],
        "cv": full["cv"],
        "blocks": rows,
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
        f"{measured.get('version') or table['runtime_version']}{where}, batch {table['batch']}, threads {table['threads']}",
        "block        kind        saving ms   noise ms   saving %  remeasured",
    ]
    for row in table["blocks"]:
        lines.append(
            f"{row['block']:<12} {row['kind']:<10} {row['saving_ms']:>9.4f} {row['noise_ms']:>10.4f} "
            f"{100 * row['saving_fraction']:>9.1f}  {'yes' if row['remeasured'] else ''}"
            f"{' (within noise)' if row['within_noise'] else ''}"
        )
    return "\n".join(lines)
