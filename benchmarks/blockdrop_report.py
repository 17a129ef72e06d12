"""`python benchmarks/blockdrop.py report`: time every model of the block-drop benchmark in ONE interleaved
latency run (teacher included, so every latency_ms is measured in the same run as the teacher's), then write
benchmarks/results/blockdrop.{json,md,png}."""

import json
import sys
import time
from pathlib import Path

from blockdrop import RESULTS, RUNS_JSON, command, machine

from pipeline.fileio import atomic_write_json, atomic_write_text

TEACHER_KEY = "teacher"


def _records() -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(RUNS_JSON.glob("*.json"))]


def _time_everything(paths: dict[str, Path], threads: int, rounds: int) -> dict:
    from pipeline.measure import LatencySettings, example_input, time_onnx_models
    from pipeline.preprocess import default_preprocess

    settings = LatencySettings(threads=threads, warmup=20, runs=100, rounds=rounds, max_seconds=0.5)
    timed = time_onnx_models(
        paths,
        settings,
        example_input(settings, default_preprocess(1, 28, 28)),
        rounds,
        label="report: every model, interleaved",
    )
    return {"settings": settings.to_dict(), "models": timed}


def report(threads: int = 2, rounds: int = 30) -> None:
    records = _records()
    fmnist = [r for r in records if r.get("method") in ("block-drop", "filter-prune")]
    if not fmnist:
        sys.exit("no block-drop runs recorded yet")
    teacher_onnx = next(r["teacher_onnx"] for r in fmnist if r["method"] == "block-drop")
    teacher_accuracy = next(r["teacher_accuracy"] for r in fmnist if r["method"] == "block-drop")
    paths = {TEACHER_KEY: Path(teacher_onnx), **{r["name"]: Path(r["onnx"]) for r in fmnist}}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        sys.exit(f"ONNX files missing (re-run those rows): {', '.join(missing)}")
    started = time.monotonic()
    latency = _time_everything(paths, threads, rounds)
    teacher_ms = latency["models"][TEACHER_KEY]["median_ms"]
    rows = [
        {
            "model": "resnet20-fmnist",
            "method": "teacher",
            "real_images": 0,
            "latency_ms": teacher_ms,
            "latency_reduction": 0.0,
            "accuracy": teacher_accuracy,
            "fused_max_abs_diff": None,
            "wall_s": None,
            "name": "teacher",
            "latency_cv": latency["models"][TEACHER_KEY]["cv"],
        }
    ]
    for r in sorted(fmnist, key=lambda r: (r["method"], r["real_images"], r["name"])):
        ms = latency["models"][r["name"]]["median_ms"]
        rows.append(
            {
                "model": "resnet20-fmnist",
                "method": r["method"],
                "real_images": r["real_images"],
                "latency_ms": ms,
                "latency_reduction": 1 - ms / teacher_ms,
                "accuracy": r["accuracy"],
                "fused_max_abs_diff": r.get("fused_max_abs_diff"),
                "wall_s": r.get("drop_stage_wall_s", r.get("wall_s")),
                "name": r["name"],
                "latency_cv": latency["models"][r["name"]]["cv"],
                "dropped_blocks": r.get("dropped_blocks"),
                "matched_to": r.get("matched_to"),
                "channels": r.get("channels"),
                "requested_reduction": r.get("requested_reduction"),
                "finetune_iterations": (r.get("finetune") or {}).get("iterations"),
                "table_from_cache": r.get("table_from_cache"),
            }
        )
    for r in records:
        if r["name"].startswith("resnet34-224"):
            point = r["operating_point"]
            rows.append(
                {
                    "model": "resnet34-224",
                    "method": "teacher",
                    "real_images": 0,
                    "latency_ms": point["full_ms"],
                    "latency_reduction": 0.0,
                    "accuracy": None,
                    "fused_max_abs_diff": None,
                    "wall_s": None,
                    "name": r["name"] + "-full",
                }
            )
            rows.append(
                {
                    "model": "resnet34-224",
                    "method": "block-drop",
                    "real_images": 0,
                    "latency_ms": point["dropped_ms"],
                    "latency_reduction": point["measured_reduction"],
                    "accuracy": None,
                    "fused_max_abs_diff": None,
                    "wall_s": r["wall_s"],
                    "name": r["name"],
                    "dropped_blocks": point["dropped_blocks"],
                    "requested_reduction": point["requested_reduction"],
                }
            )
    result = {
        "command": command(),
        "machine": machine(),
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "latency_run_s": round(time.monotonic() - started, 1),
        "latency_run": latency["settings"],
        "rows": rows,
    }
    atomic_write_json(RESULTS / "blockdrop.json", result)
    atomic_write_text(RESULTS / "blockdrop.md", markdown(result, records))
    plot(rows, RESULTS / "blockdrop.png")
    print((RESULTS / "blockdrop.md").read_text())


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.2f} %"


def _number(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _synthesis_note(records: list[dict]) -> list[str]:
    """Data-free rows share one transfer set (`blockdrop.py synthesize`, the synthesize stage of `pipeline drop`)."""
    made = [r for r in records if r["name"].startswith("synthesize-")]
    if not made:
        return []
    r = made[-1]
    return [
        f"Data-free rows and filter pruning share one transfer set: `{r['command']}`, {r['budget']} budget, "
        f"synthesis stage {r['wall_s']:.0f} s (not included in the stage wall times below)."
    ]


def markdown(result: dict, records: list[dict]) -> str:
    m = result["machine"]
    lines = [
        "# Block dropping (PRACTISE) vs filter pruning — measured",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; ONNX Runtime CPU, batch 1, {result['latency_run']['threads']} "
        f"threads. Latency: every Fashion-MNIST model below timed in ONE interleaved run ({result['latency_run']['rounds']} "
        "rounds of up to 100 runs each, order shuffled per round; median of the round medians), so each row's latency is measured in the same "
        "run as the teacher's. Accuracy: the exported ONNX model on the full Fashion-MNIST test split (10,000 "
        "images); no labelled image is used before that in data-free rows.",
        f"Report command: `{result['command']}`; each row's own command is in `benchmarks/results/blockdrop/<name>.json`.",
        *_synthesis_note(records),
        "",
        "| model | method | real images | asked | latency ms | reduction | top-1 | Δ vs teacher | fused max abs diff | stage wall s | fine-tune its | dropped / channels |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    teacher_accuracy = {row["model"]: row["accuracy"] for row in result["rows"] if row["method"] == "teacher"}
    for row in result["rows"]:
        base = teacher_accuracy.get(row["model"])
        delta = (
            f"{100 * (row['accuracy'] - base):+.2f} pt"
            if row["accuracy"] is not None and base is not None and row["method"] != "teacher"
            else "—"
        )
        detail = ", ".join(row.get("dropped_blocks") or []) or (
            str(row.get("channels"))[:60] if row.get("channels") else ""
        )
        asked = (
            f"{100 * row['requested_reduction']:.0f} %"
            if row.get("requested_reduction")
            else (f"= {row['matched_to']}" if row.get("matched_to") else "—")
        )
        lines.append(
            f"| {row['model']} | {row['method']} | {row['real_images']} | {asked} | {row['latency_ms']:.4f} | "
            f"{100 * row['latency_reduction']:.1f} % | {_pct(row['accuracy'])} | {delta} | "
            f"{_number(row['fused_max_abs_diff'], '.1e')} | {_number(row['wall_s'], '.0f')} | "
            f"{_number(row.get('finetune_iterations'), 'd')} | {detail} |"
        )
    resnet34 = [r for r in records if r["name"].startswith("resnet34-224")]
    for r in resnet34:
        from pipeline.drop.latency_table import format_table

        lines += [
            "",
            f"## torchvision resnet34, 3x224x224, random weights — per-block latency table ({r['machine']['threads']} "
            f"threads)",
            "",
            f"Command: `{r['command']}`; table measured in {r['table_s']:.0f} s.",
            "",
            "```",
            format_table(r["table"]),
            "```",
            "",
            f"PRACTISE's operating point ({100 * r['operating_point']['requested_reduction']:.1f} % lower latency): "
            f"our selection drops {', '.join(r['operating_point']['dropped_blocks'])}; measured "
            f"{r['operating_point']['full_ms']:.2f} → {r['operating_point']['dropped_ms']:.2f} ms "
            f"({100 * r['operating_point']['measured_reduction']:.1f} % lower), full and dropped timed together. "
            "With random weights the recoverability term says nothing about accuracy; no accuracy is claimed.",
        ]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fmnist = [r for r in rows if r["model"] == "resnet20-fmnist" and r["accuracy"] is not None]
    groups = {
        "teacher": ("teacher", "k", "*"),
        "block-drop-0": ("block drop, data-free", "tab:blue", "o"),
        "block-drop-real": ("block drop, 50 real images/class", "tab:green", "s"),
        "filter-prune": ("filter pruning (torch-pruning, L1)", "tab:red", "^"),
    }
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, (label, colour, marker) in groups.items():

        def member(r):
            if key == "block-drop-0":
                return r["method"] == "block-drop" and r["real_images"] == 0
            if key == "block-drop-real":
                return r["method"] == "block-drop" and r["real_images"] > 0
            return r["method"] == key

        points = sorted((r["latency_ms"], 100 * r["accuracy"]) for r in fmnist if member(r))
        if points:
            ax.plot(
                *zip(*points),
                marker=marker,
                color=colour,
                label=label,
                linestyle="-" if key == "block-drop-0" else "none",
            )
    ax.set_xlabel("latency, ms (ONNX Runtime CPU, batch 1, median)")
    ax.set_ylabel("top-1, % (Fashion-MNIST test)")
    ax.set_title("ResNet-20 Fashion-MNIST teacher: block dropping vs filter pruning")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
