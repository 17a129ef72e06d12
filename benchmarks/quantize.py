"""Quantisation benchmark: fp32 / fp16 / int8 (each calibration method, synthetic vs real calibration) / binary
for the embedded teachers, the block-dropped student, and torchvision resnet18/resnet34 at 224x224 (random
weights: latency and size only).

    python benchmarks/quantize.py run resnet20-fmnist --precision int8 --calib synthetic --method minmax
    python benchmarks/quantize.py all              # every row below, one after another
    python benchmarks/quantize.py formats resnet34 # every CPU INT8 format vs fp32 at batch 1 and 32
    python benchmarks/quantize.py report           # one interleaved latency run per model (b1, b32) -> quantize.{json,md}

Each run is `pipeline quantize` (the product's own path, in-process) in runs/bench-quantize/<name>/ and
writes benchmarks/results/quantize/<name>.json. Accuracy: the quantised ONNX model on the full Fashion-MNIST
test split, computed by the stage; calibration and binary KD never see a label.
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datafree import machine, machine_tag  # noqa: E402

from pipeline.fileio import atomic_write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUNS_JSON = RESULTS / "quantize"
WORK = ROOT / "runs" / "bench-quantize"

# name -> how to get the fp32 model; "random" models are seeded torchvision weights at 224x224
MODELS = {
    "resnet20-fmnist": {"teacher": "embedded:resnet20-fmnist", "arch": "resnet20", "budget": "quick"},
    "lenet5-fmnist": {"teacher": "embedded:lenet5-fmnist", "arch": "lenet5", "budget": "quick"},
    "resnet20-fmnist-drop30": {
        "teacher": "runs/bench-blockdrop/drop-0.3-df-s0/drop/dropped.pt",
        "arch": "resnet20",
        "budget": "quick",
    },
    "resnet18-224": {"random": "resnet18", "arch": "resnet18", "budget": "smoke"},
    "resnet34-224": {"random": "resnet34", "arch": "resnet34", "budget": "smoke"},
}
FMNIST_ROWS = (
    [("fp16", None, None)]
    + [("int8", calib, method) for calib in ("synthetic", "real") for method in ("minmax", "entropy", "percentile")]
    + [("binary", "synthetic", None)]
)
RANDOM_ROWS = [("fp16", None, None), ("int8", "synthetic", "minmax"), ("binary", "synthetic", None)]
PLAN = {
    "resnet20-fmnist": FMNIST_ROWS,
    "lenet5-fmnist": FMNIST_ROWS,
    "resnet20-fmnist-drop30": [("fp16", None, None), ("int8", "synthetic", "minmax"), ("int8", "real", "minmax")],
    "resnet18-224": RANDOM_ROWS,
    "resnet34-224": RANDOM_ROWS,
}


def command() -> str:
    return " ".join(["python", "benchmarks/quantize.py", *sys.argv[1:]])


def run_name(model: str, precision: str, calib: str | None, method: str | None) -> str:
    return "-".join(part for part in (model, precision, calib, method) if part)


def teacher_path(model: str) -> str:
    spec = MODELS[model]
    if "random" not in spec:
        return spec["teacher"]
    import torch

    from pipeline.models import create_model

    path = WORK / f"{model}-random.pt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        torch.save(create_model(spec["random"]).state_dict(), path)
    return str(path)


def run(model: str, precision: str, calib: str | None, method: str | None) -> None:
    """One `pipeline quantize`; the run folder starts with this model's synthesis when an earlier row made it."""
    from pipeline.recipes.build import run_build
    from pipeline.recipes.options import BuildOptions

    spec = MODELS[model]
    name = run_name(model, precision, calib, method)
    folder = WORK / name
    if folder.exists():
        shutil.rmtree(folder)
    random_weights = "random" in spec
    shared = WORK / f"{model}-shared-synthesis"
    if calib != "real" and precision != "binary" and (shared / "synthesize").is_dir():
        # same teacher, same synthesis settings: the stage cache recognises it and skips it (its wall time is
        # reported once, in the row that made it)
        folder.mkdir(parents=True)
        shutil.copytree(shared / "synthesize", folder / "synthesize")
        shutil.copy(shared / "manifest.json", folder / "manifest.json")
    options = BuildOptions(
        teacher=teacher_path(model),
        arch=spec["arch"],
        out=folder,
        budget=spec["budget"],
        recipe="quantize",
        precision=precision,
        calib=calib or "synthetic",
        calib_method=method or "minmax",
        images="fmnist-train" if calib == "real" else None,
        eval="none" if random_weights else "fmnist",
        input_shape=(3, 224, 224) if random_weights else None,
        # random weights: accuracy means nothing, so no repair (it would chase noise) and one KD step for binary
        max_accuracy_drop=99 if random_weights else 0.5,
        binary_iterations=1 if random_weights else None,
        command=command(),
    )
    started = time.monotonic()
    summary = run_build(options, until="quantize")
    wall = time.monotonic() - started
    manifest = json.loads((folder / "manifest.json").read_text())
    if calib != "real" and precision != "binary" and not (shared / "synthesize").is_dir():
        shared.mkdir(parents=True, exist_ok=True)
        shutil.copytree(folder / "synthesize", shared / "synthesize")
        kept = {**manifest, "stages": {"synthesize": manifest["stages"]["synthesize"]}}
        atomic_write_json(shared / "manifest.json", kept)
    stages = manifest["stages"]
    metrics = stages["quantize"]["metrics"]
    record = {
        "name": name,
        "model": spec["arch"],
        "variant": model,
        "precision": precision,
        "calibration": metrics["calibration"] if precision != "fp16" else None,
        "calibration_method": method,
        "random_weights": random_weights,
        "onnx": str((folder / "quantize" / "model.onnx").relative_to(ROOT)),
        "fp32_onnx": str((folder / "export" / "teacher.onnx").relative_to(ROOT)),
        "quantize_wall_s": stages["quantize"]["wall_s"],
        "synthesize_wall_s": stages.get("synthesize", {}).get("wall_s"),
        "command_wall_s": round(wall, 1),
        "metrics": metrics,
        "run_folder": summary["run_folder"],
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "command": command(),
    }
    atomic_write_json(RUNS_JSON / f"{name}.json", record)
    keys = (
        "format",
        "accuracy_fp32",
        "accuracy_quantized",
        "accuracy_drop_points",
        "size_ratio",
        "speedup",
        "estimated_accuracy_drop_points",
        "binarised_bytes",
        "binarised_fp32_bytes",
    )
    print(json.dumps({k: metrics.get(k) for k in keys}, default=str, indent=1))


def all_rows(models: list[str]) -> None:
    for model in models:
        for precision, calib, method in PLAN[model]:
            print(f"=== {model} {precision} {calib or ''} {method or ''}", flush=True)
            run(model, precision, calib, method)


def formats(model: str, rounds: int) -> None:
    """Every INT8 format this CPU could be given (TensorRT's S8S8 QDQ and the CPU candidates) against fp32, at
    batch 1 and 32, from the same calibration: the evidence behind the cpu target's format choice."""
    from pipeline.measure import LatencySettings, example_input, time_onnx_models
    from pipeline.preprocess import preprocess_from_onnx
    from pipeline.quantize.calibration import load_calibration_images
    from pipeline.quantize.cpu_isa import detect_cpu_isa
    from pipeline.quantize.int8 import (
        TENSORRT_QDQ,
        Int8Settings,
        cpu_candidates,
        prepare_for_quantization,
        quantize_int8,
    )

    base = WORK / run_name(model, "int8", "synthetic", "minmax")
    fp32 = base / "export" / "teacher.onnx"
    if not fp32.is_file():
        sys.exit(f"run `python benchmarks/quantize.py run {model} --precision int8` first")
    preprocess = preprocess_from_onnx(fp32, None)
    images = load_calibration_images("synthetic", preprocess, transfer_set=base / "synthesize" / "transfer_set.pt")
    folder = WORK / f"{model}-formats"
    folder.mkdir(parents=True, exist_ok=True)
    prepared = prepare_for_quantization(fp32, folder / "prepared.onnx")
    isa = detect_cpu_isa()
    candidates = {fmt.name: fmt for fmt in [TENSORRT_QDQ, *cpu_candidates(isa)]}
    paths = {"fp32": fp32}
    for name, fmt in candidates.items():
        paths[name] = quantize_int8(prepared, folder / f"{name}.onnx", fmt, Int8Settings(), images.calibration, folder)
    timing = {}
    for batch in (1, 32):
        settings = LatencySettings(
            batch=batch, threads=2, warmup=3 if batch > 1 else 10, runs=20 if batch > 1 else 100, max_seconds=2.0
        )
        timed = time_onnx_models(
            paths, settings, example_input(settings, preprocess), rounds, label=f"formats b{batch}"
        )
        timing[f"b{batch}"] = {name: entry["median_ms"] for name, entry in timed.items()}
    record = {
        "model": model,
        "isa": isa.to_dict(),
        "rounds": rounds,
        "formats": {n: f.to_dict() for n, f in candidates.items()},
        "latency_ms": timing,
        "speedup_vs_fp32": {b: {n: t["fp32"] / ms for n, ms in t.items()} for b, t in timing.items()},
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "command": command(),
    }
    atomic_write_json(RUNS_JSON / f"formats-{model}-{machine_tag()}.json", record)
    print(json.dumps(record["speedup_vs_fp32"], indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("run")
    p.add_argument("model", choices=list(MODELS))
    p.add_argument("--precision", default="int8", choices=["fp16", "int8", "binary"])
    p.add_argument("--calib", default="synthetic", choices=["synthetic", "real"])
    p.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"])
    p = sub.add_parser("all")
    p.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    p = sub.add_parser("formats")
    p.add_argument("model", choices=list(MODELS))
    p.add_argument("--rounds", type=int, default=5)
    p = sub.add_parser("report")
    p.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.mode == "run":
        run(
            args.model,
            args.precision,
            args.calib if args.precision != "fp16" else None,
            args.method if args.precision == "int8" else None,
        )
    elif args.mode == "all":
        all_rows(args.models)
    elif args.mode == "formats":
        formats(args.model, args.rounds)
    else:
        from quantize_report import report

        report(args.rounds)


if __name__ == "__main__":
    main()
