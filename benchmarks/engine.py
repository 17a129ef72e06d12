"""Engine-stage evidence that needs no GPU.

    python benchmarks/engine.py compat     # pre-flight of every registry architecture in fp32 / fp16 / int8
    python benchmarks/engine.py loopback   # `pipeline build` for the Jetson Orin Nano profile, the device being
                                           # a real sshd on 127.0.0.1 (tests/loopback.py)

compat -> benchmarks/results/engine_compat.{json,md}: each architecture (random weights: structure is what is
checked) exported as the pipeline exports it, converted to fp16 by the quantize stage's converter and to INT8 by
its TensorRT format (symmetric S8S8 Q/DQ, 16 noise images to calibrate: ranges, not accuracy), then checked by
`pipeline.runtimes.tensorrt_preflight`. The cpu target's U8S8 QOperator INT8 of one model is checked too, as the
negative control: it must fail. loopback -> benchmarks/results/engine_loopback.json: the teacher's block latency table, the search's (or drop's)
record, the engine stage's record and the bench entries, all measured through the SSH harness.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
from datafree import commit, machine  # noqa: E402

from pipeline.fileio import atomic_write_json, atomic_write_text  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "runs" / "bench-engine"


def command() -> str:
    return " ".join(["python", "benchmarks/engine.py", *sys.argv[1:]])


def compat() -> None:
    import numpy as np
    import torch

    from pipeline.export import export_onnx
    from pipeline.models import create_model, get_spec, list_models
    from pipeline.preprocess import default_preprocess
    from pipeline.quantize.cpu_isa import detect_cpu_isa
    from pipeline.quantize.fp16 import convert_fp16
    from pipeline.quantize.int8 import (
        TENSORRT_QDQ,
        Int8Settings,
        cpu_candidates,
        prepare_for_quantization,
        quantize_int8,
    )
    from pipeline.runtimes.tensorrt_preflight import preflight

    rows = []
    WORK.mkdir(parents=True, exist_ok=True)
    for name in list_models():
        spec = get_spec(name)
        channels, height, width = spec.default_input
        torch.manual_seed(0)
        model = create_model(name).eval()
        preprocess = default_preprocess(channels, height, width)
        with tempfile.TemporaryDirectory(prefix="engine-compat-") as folder:
            folder = Path(folder)
            started = time.monotonic()
            export_onnx(model, preprocess, folder / "fp32.onnx")
            fp16 = convert_fp16(folder / "fp32.onnx", folder / "fp16.onnx")
            prepared = prepare_for_quantization(folder / "fp32.onnx", folder / "prepared.onnx")
            calibration = np.random.default_rng(0).standard_normal((16, channels, height, width)).astype(np.float32)
            int8 = quantize_int8(prepared, folder / "int8.onnx", TENSORRT_QDQ, Int8Settings(), calibration, folder)
            files = {"fp32": folder / "fp32.onnx", "fp16": fp16, "int8": int8}
            if name == "resnet20":  # negative control: the CPU's integer-operator format must be refused
                qoperator = next(f for f in cpu_candidates(detect_cpu_isa()) if f.operators == "qoperator")
                files["int8 (cpu qoperator, control)"] = quantize_int8(
                    prepared, folder / "qop.onnx", qoperator, Int8Settings(), calibration, folder
                )
            for precision, path in files.items():
                report = preflight(path, precision.split()[0])
                rows.append(
                    {
                        "model": name,
                        "input": list(spec.default_input),
                        "precision": precision,
                        "ok": report.ok,
                        "errors": len(report.errors),
                        "warnings": len(report.warnings),
                        "notes": sum(f.severity == "note" for f in report.findings),
                        "error_kinds": sorted({f"{f.kind}: {f.op}" for f in report.errors}),
                        "warning_examples": sorted({f.message.split(",")[0] for f in report.warnings})[:6],
                        "qdq_nodes": report.ops.get("QuantizeLinear", 0) + report.ops.get("DequantizeLinear", 0),
                    }
                )
            verdicts = [
                f"{r['precision']} {'ok' if r['ok'] else 'REFUSED'} ({r['warnings']} warnings)"
                for r in rows
                if r["model"] == name
            ]
            print(f"{name}: {', '.join(verdicts)} [{time.monotonic() - started:.0f} s]", flush=True)
    record = {
        "rows": rows,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "command": command(),
    }
    atomic_write_json(RESULTS / "engine_compat.json", record)
    lines = [
        "# TensorRT pre-flight of every registry architecture",
        "",
        f"`{command()}` on {record['machine']['cpu']}, {record['recorded_at']}. No TensorRT was used: this is "
        "`pipeline check`'s verdict (parser-unsupported ops, Q/DQ zero points and types, dtypes; alignment "
        "warnings are Conv/Gemm channel counts that are not multiples of 8 for fp16 or 32 for int8, excluding "
        "image channels and class counts, which are listed as notes).",
        "",
        "| model | input | precision | TensorRT parser | errors | alignment warnings | Q/DQ nodes | examples |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        examples = "; ".join(r["error_kinds"] or r["warning_examples"])
        lines.append(
            f"| {r['model']} | {'x'.join(map(str, r['input']))} | {r['precision']} | "
            f"{'accepts' if r['ok'] else '**refuses**'} | {r['errors']} | {r['warnings']} | {r['qdq_nodes']} | {examples} |"
        )
    atomic_write_text(RESULTS / "engine_compat.md", "\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'engine_compat.md'}")


def loopback(budget: str) -> None:
    from loopback import start_sshd

    folder = WORK / "sshd"
    shutil.rmtree(folder, ignore_errors=True)
    process, device = start_sshd(folder)
    try:
        target = WORK / "jetson-orin-nano-loopback.toml"
        target.write_text(device.target_toml())
        out = WORK / f"jetson-loopback-{budget}"
        args = [
            sys.executable,
            "-m",
            "pipeline.cli",
            "build",
            "--target",
            str(target),
            "--budget",
            budget,
            "--out",
            str(out),
            "--force",
            "--json",
        ]
        started = time.monotonic()
        done = subprocess.run(args, capture_output=True, text=True)
        wall = time.monotonic() - started
        if done.returncode != 0:
            sys.exit(f"build failed: {done.stderr[-2000:]}")
        summary = json.loads(done.stdout)
        stages = json.loads((out / "manifest.json").read_text())["stages"]
        # `build` on a target with a latency budget searches (teacher and student, blocks x precision); a drop
        # recipe leaves its table in drop/, the search the teacher's in cache/
        chosen = "drop" if "drop" in stages else "search"
        table_file = (
            out / "drop" / "latency_table.json" if chosen == "drop" else next(out.glob("cache/latency-resnet20-*"))
        )
        table = json.loads(table_file.read_text())
        record = {
            "build_command": " ".join(["pipeline", *args[3:]]),
            "target_file": target.read_text(),
            "summary": summary,
            "latency_table": table,
            chosen: stages[chosen]["metrics"],
            "engine": stages["engine"]["metrics"],
            "bench": stages["bench"]["metrics"],
            "wall_s": round(wall, 1),
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(),
            "commit": commit(),
            "command": command(),
        }
        atomic_write_json(RESULTS / "engine_loopback.json", record)
        print(
            json.dumps(
                {
                    "latency_source": table["latency_source"],
                    "measured_on": table["measured_on"],
                    "chosen": stages[chosen]["metrics"].get("dropped_blocks")
                    or stages[chosen]["metrics"].get("chosen"),
                    "engine_built": record["engine"]["built"],
                    "wall_s": record["wall_s"],
                },
                indent=1,
            )
        )
    finally:
        process.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("compat")
    p = sub.add_parser("loopback")
    p.add_argument("--budget", default="smoke")
    args = parser.parse_args()
    compat() if args.mode == "compat" else loopback(args.budget)


if __name__ == "__main__":
    main()
