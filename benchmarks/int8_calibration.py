"""Issue 20's targets: `pipeline quantize --precision int8 --calib-method percentile` on both embedded teachers at
every budget (cpu target), plus the TensorRT form (jetson target, smoke) with both of its error figures.

    python benchmarks/int8_calibration.py            # about 30 minutes on 2 cores (two `full` syntheses of 10 min)
    python benchmarks/int8_calibration.py --budgets smoke

Each row is one real CLI run in its own run folder (runs/bench-int8-calibration/); the row records the exit code,
the wall time, how many calibration images were used, and the error and accuracy the stage reports. Accuracy is on
the Fashion-MNIST test split (reporting only: nothing here is chosen on it). Writes
benchmarks/results/int8-calibration.{json,md}."""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.record_run import cpu_name  # noqa: E402
from pipeline.fileio import atomic_write_json, atomic_write_text  # noqa: E402
from pipeline.quantize.cpu_isa import detect_cpu_isa  # noqa: E402

TEACHERS = ("resnet20-fmnist", "lenet5-fmnist")
BUDGETS = ("smoke", "quick", "full")


def commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()


def run_one(teacher: str, budget: str, target: str, out: Path) -> dict:
    command = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "quantize",
        "--teacher",
        f"embedded:{teacher}",
        "--target",
        target,
        "--budget",
        budget,
        "--precision",
        "int8",
        "--calib-method",
        "percentile",
        "--out",
        str(out),
    ]
    if target != "cpu":
        command += ["--eval", "fmnist"]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    wall = time.monotonic() - started
    row = {
        "teacher": teacher,
        "budget": budget,
        "target": target,
        "calibration_method": "percentile",
        "command": " ".join(["pipeline", *command[3:]]),
        "returncode": result.returncode,
        "wall_s": round(wall, 1),
    }
    if result.returncode != 0:
        return {**row, "error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""}
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    quantize = stages["quantize"]["metrics"]
    kernels = quantize.get("output_error_onnxruntime_kernels")
    return {
        **row,
        "transfer_set_images": stages["synthesize"]["metrics"]["transfer_set"]["images"],
        "calibration_images": quantize["calibration_images"],
        "format": quantize["format"]["name"],
        "judged_by": quantize["judged_by"],
        "relative_mse": quantize["output_error"]["relative_mse"],
        "top1_agreement": quantize["output_error"]["top1_agreement"],
        "relative_mse_onnxruntime_kernels": kernels["relative_mse"] if kernels else None,
        "accuracy_fp32": quantize.get("accuracy_fp32"),
        "accuracy": quantize.get("accuracy_quantized"),
        "eval_images": quantize.get("eval_images"),
        "float_layers": len(quantize["float_layers"]),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| teacher | budget | target | exit | wall s | transfer set | calib images | format | rel. MSE (reported) "
        "| rel. MSE (CPU kernels) | top-1 fp32 -> int8 |",
        "|" + "---|" * 11,
    ]
    for r in rows:
        accuracy = (
            f"{100 * r['accuracy_fp32']:.2f} -> {100 * r['accuracy']:.2f} % ({r['eval_images']})"
            if r.get("accuracy") is not None
            else ""
        )
        kernels = (
            f"{r['relative_mse_onnxruntime_kernels']:.4g}"
            if r.get("relative_mse_onnxruntime_kernels") is not None
            else "(same)"
        )
        lines.append(
            f"| {r['teacher']} | {r['budget']} | {r['target']} | {r['returncode']} | {r['wall_s']} | "
            f"{r.get('transfer_set_images', '')} | {r.get('calibration_images', '')} | {r.get('format', r.get('error', ''))} | "
            f"{r['relative_mse']:.4g} | {kernels} | {accuracy} |"
            if r["returncode"] == 0
            else f"| {r['teacher']} | {r['budget']} | {r['target']} | {r['returncode']} | {r['wall_s']} | | | {r.get('error', '')} | | | |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", nargs="+", default=list(BUDGETS), choices=BUDGETS)
    args = parser.parse_args()
    folder = ROOT / "runs" / "bench-int8-calibration"
    machine = {"cpu": cpu_name(), "isa": detect_cpu_isa().summary(), "commit": commit()}
    plan = [(t, b, "cpu") for b in args.budgets for t in TEACHERS] + [
        (t, "smoke", "jetson-orin-nano") for t in TEACHERS
    ]
    rows = []
    for teacher, budget, target in plan:
        print(f"{teacher} {budget} {target} ...", flush=True)
        row = run_one(teacher, budget, target, folder / f"{teacher}-{budget}-{target}")
        rows.append({**row, "commit": machine["commit"], "cpu": machine["cpu"], "isa": machine["isa"]})
        print(f"  exit {row['returncode']} in {row['wall_s']} s", flush=True)
    results = ROOT / "benchmarks" / "results"
    atomic_write_json(results / "int8-calibration.json", {"machine": machine, "rows": rows})
    atomic_write_text(
        results / "int8-calibration.md",
        f"# INT8 percentile calibration at every budget (issue 20)\n\n"
        f"Commit {machine['commit']}; {machine['isa']}; 2 cores. Command: "
        f"`python benchmarks/int8_calibration.py`.\n\n{table(rows)}\n\n"
        "`rel. MSE (reported)`: the figure the stage reports: onnxruntime's integer kernels for the cpu "
        "target (what it deploys on), the Q/DQ graph as written for TensorRT targets (what TensorRT "
        "computes). `rel. MSE (CPU kernels)`: this CPU's onnxruntime kernels on the TensorRT-form model, "
        "recorded for comparison. Accuracy: Fashion-MNIST test split, reporting only.\n",
    )
    print(table(rows))


if __name__ == "__main__":
    main()
