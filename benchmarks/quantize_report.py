"""`python benchmarks/quantize.py report`: every quantised model of a variant timed together with its fp32 model
(interleaved rounds, ONNX Runtime CPU, 2 threads) at batch 1 and 32, sizes on disk, and the accuracies the
stage measured -> benchmarks/results/quantize.{json,md}."""

import json
import sys
import time
from pathlib import Path

from datafree import machine
from quantize import RESULTS, ROOT, RUNS_JSON, command

from pipeline.fileio import atomic_write_json, atomic_write_text

BATCHES = {1: {"warmup": 10, "runs": 100}, 32: {"warmup": 2, "runs": 10}}
ORDER = {"fp32": 0, "fp16": 1, "int8": 2, "binary": 3}


def _runs() -> list[dict]:
    return [
        json.loads(path.read_text())
        for path in sorted(RUNS_JSON.glob("*.json"))
        if not path.name.startswith("formats-")
    ]


def _time(paths: dict[str, Path], preprocess, rounds: int) -> dict[int, dict[str, float]]:
    from pipeline.measure import LatencySettings, example_input, time_onnx_models

    timing = {}
    for batch, counts in BATCHES.items():
        settings = LatencySettings(batch=batch, threads=2, max_seconds=2.0, **counts)
        timed = time_onnx_models(paths, settings, example_input(settings, preprocess), rounds, label=f"b{batch}")
        timing[batch] = {name: entry["median_ms"] for name, entry in timed.items()}
    return timing


def report(rounds: int) -> None:
    from pipeline.preprocess import preprocess_from_onnx
    from pipeline.quantize.cpu_isa import detect_cpu_isa

    runs = _runs()
    if not runs:
        sys.exit("no runs yet: python benchmarks/quantize.py all")
    started = time.monotonic()
    rows = []
    for variant in dict.fromkeys(run["variant"] for run in runs):
        group = [run for run in runs if run["variant"] == variant]
        fp32 = ROOT / group[0]["fp32_onnx"]
        paths = {"fp32": fp32, **{run["name"]: ROOT / run["onnx"] for run in group}}
        timing = _time(paths, preprocess_from_onnx(fp32, None), rounds)
        first = group[0]["metrics"]
        rows.append(
            {
                "model": group[0]["model"],
                "variant": variant,
                "precision": "fp32",
                "calibration": None,
                "calibration_method": None,
                "format": None,
                "accuracy": first.get("accuracy_fp32"),
                "size_bytes": fp32.stat().st_size,
                "binarised_bytes": None,
                "binarised_fp32_bytes": None,
                "latency_ms_b1": timing[1]["fp32"],
                "latency_ms_b32": timing[32]["fp32"],
                "wall_s": None,
                "random_weights": group[0]["random_weights"],
            }
        )
        for run in sorted(
            group, key=lambda r: (ORDER[r["precision"]], r["calibration"] or "", r["calibration_method"] or "")
        ):
            metrics = run["metrics"]
            fmt = metrics.get("format")
            rows.append(
                {
                    "model": run["model"],
                    "variant": variant,
                    "precision": run["precision"],
                    "calibration": run["calibration"],
                    "calibration_method": run["calibration_method"],
                    "format": fmt["name"] if isinstance(fmt, dict) else fmt,
                    "accuracy": metrics.get("accuracy_quantized"),
                    "size_bytes": (ROOT / run["onnx"]).stat().st_size,
                    "binarised_bytes": metrics.get("binarised_bytes"),
                    "binarised_fp32_bytes": metrics.get("binarised_fp32_bytes"),
                    "latency_ms_b1": timing[1][run["name"]],
                    "latency_ms_b32": timing[32][run["name"]],
                    "wall_s": run["quantize_wall_s"],
                    "random_weights": run["random_weights"],
                    "estimated_accuracy_drop_points": metrics.get("estimated_accuracy_drop_points"),
                    "float_layers": len(metrics.get("float_layers") or []),
                    "run": run["name"],
                    **(
                        {
                            "binarised_layers": metrics.get("binarised_layers"),
                            "kept_layers": metrics.get("kept_layers", []),
                            "binarised_weight_share": metrics.get("binarised_weight_share"),
                        }
                        if run["precision"] == "binary"
                        else {}
                    ),
                }
            )
    isa = detect_cpu_isa().to_dict()
    record = {
        "rows": rows,
        "isa": isa,
        "machine": machine(),
        "rounds": rounds,
        "batches": BATCHES,
        "report_wall_s": round(time.monotonic() - started, 1),
        "command": command(),
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "runs": {run["name"]: run["command"] for run in runs},
    }
    atomic_write_json(RESULTS / "quantize.json", record)
    atomic_write_text(RESULTS / "quantize.md", _markdown(record))
    print((RESULTS / "quantize.md").read_text())


def _markdown(record: dict) -> str:
    isa = record["isa"]
    lines = [
        "# Quantisation — measured",
        "",
        f"Machine: {record['machine']['cpu']}, {record['machine']['cores']} cores; INT8 capability **{isa['int8_class']}** "
        f"(AVX2 {isa['avx2']}, AVX-512 {isa['avx512']}, VNNI {isa['vnni']}, AMX-INT8 {isa['amx_int8']}). "
        "ONNX Runtime CPU, 2 threads. Latency: each model's quantised variants timed in ONE interleaved run with "
        f"its fp32 model ({record['rounds']} rounds; batch 1: up to 100 runs per round, batch 32: 10), median of round medians.",
        "Accuracy: the quantised ONNX model on the full Fashion-MNIST test split (10,000 images), computed by the "
        "quantize stage; calibration and binary KD use no label (synthetic = the synthesis stage's transfer set, "
        "real = 512 unlabelled Fashion-MNIST training images). Random-weight models: latency and size only.",
        f"Report command: `{record['command']}`; each row's run: `python benchmarks/quantize.py run ...` "
        "(benchmarks/results/quantize/<run>.json holds its command and every stage metric).",
        "",
        "| model | precision | calibration | format | top-1 | Δ vs fp32 | size kB | size vs fp32 | binarised kB (fp32 kB) | "
        "b1 ms | b1 speed-up | b32 ms | b32 speed-up | stage s |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = {}
    for row in record["rows"]:
        if row["precision"] == "fp32":
            base = row
        accuracy = f"{100 * row['accuracy']:.2f} %" if row["accuracy"] is not None else "—"
        delta = (
            f"{100 * (row['accuracy'] - base['accuracy']):+.2f} pt"
            if row["accuracy"] is not None and base.get("accuracy") is not None and row is not base
            else "—"
        )
        calibration = " ".join(filter(None, [row["calibration"], row["calibration_method"]])) or "—"
        binarised = (
            f"{row['binarised_bytes'] / 1e3:.1f} ({row['binarised_fp32_bytes'] / 1e3:.0f}; "
            f"{row['binarised_fp32_bytes'] / row['binarised_bytes']:.1f}x)"
            if row.get("binarised_bytes")
            else "—"
        )
        lines.append(
            f"| {row['variant']} | {row['precision']} | {calibration} | {row['format'] or '—'} | {accuracy} | {delta} | "
            f"{row['size_bytes'] / 1e3:.1f} | {100 * row['size_bytes'] / base['size_bytes']:.1f} % | {binarised} | "
            f"{row['latency_ms_b1']:.3f} | {base['latency_ms_b1'] / row['latency_ms_b1']:.2f}x | "
            f"{row['latency_ms_b32']:.2f} | {base['latency_ms_b32'] / row['latency_ms_b32']:.2f}x | "
            f"{row['wall_s'] if row['wall_s'] is not None else '—'} |"
        )
    return "\n".join(lines + _binary_section(record["rows"]) + _formats_section()) + "\n"


def _binary_section(rows: list[dict]) -> list[str]:
    """Which layers each binary row binarised: the first and last always keep their precision, and so do the
    layers that lose most per weight within 1 - coverage of the binarisable weights."""
    binary_rows = [row for row in rows if row["precision"] == "binary" and row.get("binarised_layers")]
    if not binary_rows:
        return []
    lines = [
        "",
        "## Binary weights: the layers binarised",
        "",
        "First and last layer always keep their precision; of the rest, the layers with the largest output error "
        "per weight when binarised alone (label-free, synthetic images) keep theirs while they hold at most 10 % "
        "of the binarisable weights (`--binary-coverage 0.9`).",
        "",
        "| model | binarised layers | share of binarisable weights | kept (most damage per weight) |",
        "|---|---:|---:|---|",
    ]
    for row in binary_rows:
        share = row.get("binarised_weight_share")
        lines.append(
            f"| {row['variant']} | {len(row['binarised_layers'])} | "
            f"{f'{100 * share:.1f} %' if share is not None else '—'} | {', '.join(row['kept_layers']) or '—'} |"
        )
    return lines


def _formats_section() -> list[str]:
    """`python benchmarks/quantize.py formats MODEL`: every INT8 format against fp32 on this CPU."""
    lines = []
    for path in sorted(RUNS_JSON.glob("formats-*.json")):
        r = json.loads(path.read_text())
        names = list(r["latency_ms"]["b1"])
        lines += [
            "",
            f"## INT8 formats on this CPU: {r['model']} ({r['isa']['int8_class']}, {r['machine']['cpu']})",
            "",
            f"Command: `{r['command']}` ({r['rounds']} interleaved rounds, one calibration shared by all formats).",
            "",
            "| format | b1 ms | b1 vs fp32 | b32 ms | b32 vs fp32 |",
            "|---|---:|---:|---:|---:|",
        ]
        for name in names:
            lines.append(
                f"| {name} | {r['latency_ms']['b1'][name]:.3f} | {r['speedup_vs_fp32']['b1'][name]:.2f}x | "
                f"{r['latency_ms']['b32'][name]:.2f} | {r['speedup_vs_fp32']['b32'][name]:.2f}x |"
            )
    return lines


def rerender() -> None:
    """Rewrite quantize.md from quantize.json (and the formats records) without timing anything again."""
    atomic_write_text(RESULTS / "quantize.md", _markdown(json.loads((RESULTS / "quantize.json").read_text())))
