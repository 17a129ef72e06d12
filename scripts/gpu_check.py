"""The GPU check (issue 23): what only a CUDA machine can show, in one short run from a checkout with
`PYTHONPATH=.` and no install, on a machine without TensorRT, network or Fashion-MNIST, whose torch may differ
from our pin. scripts/gpu-check.sh runs it; everything lands in one JSON:

- the tests marked `gpu` (pytest -m gpu; about a minute, stopped at 3);
- a `--device cuda` distill of the embedded LeNet-5 for a fixed number of steps beside the same on the CPU
  (steps per second of each, from the stages' own manifests);
- a 1-process torchrun distill on the GPU, which initialises NCCL (pipeline/distributed.py);
- the embedded ResNet-20 teacher's latency through PyTorch CUDA, batch 1, with and without a CUDA graph
  (median of 200 timed calls after 50 warm-up calls, each call synchronised).
A missing import is named in one line, never a traceback.

    PYTHONPATH=. python3 scripts/gpu_check.py --out gpu-check.json [--steps 30]
"""

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEEDED = ("numpy", "torch", "onnx", "onnxruntime", "typer", "rich", "pytest")


def missing_imports() -> list[str]:
    missing = []
    for name in NEEDED:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def cli(*args: str, env: dict | None = None, torchrun: bool = False, timeout: float = 300):
    prefix = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1"] if torchrun else [sys.executable]
    command = [*prefix, "-m", "pipeline.cli", *args]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment, cwd=ROOT)


def distill_steps_per_s(device: str, steps: int, folder: Path, torchrun: bool = False) -> tuple[float | None, str]:
    """Steps per second of a distill bounded by steps (its own manifest's wall time), and the last error line."""
    out = folder / f"distill-{device}{'-torchrun' if torchrun else ''}"
    args = ["distill", "--teacher", "embedded:lenet5-fmnist", "--budget", "smoke", "--steps", str(steps)]
    args += ["--device", device, "--eval", "none", "--out", str(out), "--quiet"]
    try:
        done = cli(*args, torchrun=torchrun)
    except subprocess.TimeoutExpired:
        return None, f"{' '.join(args[:1])} on {device} ran past its timeout"
    if done.returncode != 0:
        return None, (done.stderr.strip().splitlines() or ["no error line"])[-1]
    entry = json.loads((out / "manifest.json").read_text())["stages"]["distill"]
    return entry["metrics"]["steps"] / entry["wall_s"], ""


def teacher_latency_ms() -> tuple[float, float]:
    """Median ms of the embedded ResNet-20 on the GPU, plain and replayed from a captured CUDA graph."""
    import numpy as np
    import torch

    from pipeline.assets import resolve_teacher
    from pipeline.models.load import load_model

    model = load_model(resolve_teacher("embedded:resnet20-fmnist")).model.cuda().eval()
    example = torch.randn(1, 1, 28, 28, device="cuda")

    def median(call) -> float:
        for _ in range(50):
            call()
        torch.cuda.synchronize()
        samples = []
        for _ in range(200):
            start = time.perf_counter()
            call()
            torch.cuda.synchronize()
            samples.append(1000 * (time.perf_counter() - start))
        return float(np.median(samples))

    with torch.no_grad():
        plain = median(lambda: model(example))
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up on a side stream, as graph capture requires
            for _ in range(3):
                model(example)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            model(example)
        graphed = median(graph.replay)
    return plain, graphed


def gpu_tests(folder: Path) -> tuple[int, int, str]:
    report = folder / "gpu-tests.xml"
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-m",
                "gpu",
                "-q",
                "-p",
                "no:cacheprovider",
                f"--junitxml={report}",
                "tests",
            ],
            capture_output=True,
            text=True,
            timeout=180,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        return 0, 1, "the gpu-marked tests ran past 3 minutes"
    if not report.is_file():
        return 0, 1, (done.stdout.strip().splitlines() or ["pytest wrote no report"])[-1]
    import xml.etree.ElementTree as ElementTree

    suite = ElementTree.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    passed = int(suite.get("tests", 0)) - failed - int(suite.get("skipped", 0))
    return passed, failed, (done.stdout.strip().splitlines() or [""])[-1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="The project's GPU check (issue 23): one JSON of what a GPU shows.")
    parser.add_argument("--out", type=Path, default=Path("gpu-check.json"))
    parser.add_argument("--steps", type=int, default=30, help="distill steps on each device")
    args = parser.parse_args(argv)
    missing = missing_imports()
    if missing:
        print(f"gpu-check: missing Python packages: {', '.join(missing)} (pip install them, or carry wheels)")
        return 2
    import torch

    if not torch.cuda.is_available():
        print(f"gpu-check: torch {torch.__version__} sees no CUDA GPU here; run this on the GPU machine")
        return 2
    started = time.monotonic()
    result = {
        "gpu_name": torch.cuda.get_device_name(0),
        "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
        or None,
        "cpu": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line), None),
    }
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        folder = Path(scratch)
        result["tests_passed"], result["tests_failed"], result["tests_summary"] = gpu_tests(folder)
        cuda_rate, cuda_error = distill_steps_per_s("cuda", args.steps, folder)
        cpu_rate, cpu_error = distill_steps_per_s("cpu", args.steps, folder)
        result["distill_steps"] = args.steps
        result["distill_steps_per_s_cuda"], result["distill_steps_per_s_cpu"] = cuda_rate, cpu_rate
        _, torchrun_error = distill_steps_per_s("cuda", 3, folder, torchrun=True)
        result["torchrun_nccl_ok"] = not torchrun_error
        result["errors"] = [e for e in (cuda_error, cpu_error, torchrun_error) if e]
    result["latency_ms_cuda"], result["latency_ms_cuda_graph"] = teacher_latency_ms()
    result["latency_measured_by"] = "PyTorch CUDA on this GPU, batch 1, median of 200 synchronised calls"
    result["wall_s"] = round(time.monotonic() - started, 1)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0 if result["tests_failed"] == 0 and not result["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
