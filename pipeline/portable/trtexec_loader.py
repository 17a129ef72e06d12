"""trtexec, NVIDIA's own harness: where it is, its command line, and its exported times and profiles."""

from __future__ import annotations  # Python 3.8 on JetPack 5

import json
import os
import shutil
import subprocess

from .errors import BenchError

TRTEXEC_TIMING_FLAGS = ["--useCudaGraph", "--noDataTransfers", "--useSpinWait", "--separateProfileRun"]


def trtexec_path() -> str | None:
    return shutil.which("trtexec") or next((p for p in ("/usr/src/tensorrt/bin/trtexec",) if os.path.isfile(p)), None)


def trtexec_command(
    onnx_path: str,
    *,
    precision: str = "fp32",
    input_name: str | None,
    input_shape,
    batch: int,
    runs: int,
    warmup_ms: int,
    engine_path: str | None,
    times_path: str,
    profile_path: str | None,
    timing_cache: str | None = None,
    workspace_mb: int | None = None,
    dla_core: int | None = None,
    gpu_fallback: bool = True,
    tensorrt_major: int | None = None,
) -> list[str]:
    """The trtexec command line for one ONNX (built, then timed) or engine file (timed); also what run folders
    record as the command to run on the device."""
    prebuilt = onnx_path.endswith((".engine", ".plan"))  # time an existing engine instead of building one
    command = [
        trtexec_path() or "trtexec",
        f"--loadEngine={onnx_path}" if prebuilt else f"--onnx={onnx_path}",
        f"--iterations={runs}",
        "--duration=0",
        f"--warmUp={warmup_ms}",
        f"--exportTimes={times_path}",
        *TRTEXEC_TIMING_FLAGS,
    ]
    if profile_path:
        command.append(f"--exportProfile={profile_path}")
    if input_name and input_shape:
        command.append(f"--shapes={input_name}:{'x'.join(str(d) for d in (batch, *input_shape))}")
    if prebuilt:
        return command  # precision, DLA and workspace were fixed when the engine was built
    if tensorrt_major is not None and tensorrt_major >= 11:
        command.append("--stronglyTyped")  # default (and the only mode) in 11; precision comes from the ONNX
    elif precision == "fp16":
        command.append("--fp16")
    elif precision in ("int8", "binary"):
        command += ["--int8", "--fp16"]
    if engine_path:
        command.append(f"--saveEngine={engine_path}")
    if timing_cache:
        command.append(f"--timingCacheFile={timing_cache}")
    if workspace_mb:
        command.append(f"--memPoolSize=workspace:{workspace_mb}M")
    if dla_core is not None:
        command.append(f"--useDLACore={dla_core}")
        if gpu_fallback:
            command.append("--allowGPUFallback")
    return command


def parse_trtexec_times(path: str) -> list[float]:
    """Per-iteration GPU compute milliseconds from `--exportTimes` (a list of {startComputeMs, computeMs, latencyMs,
    ...}); with --noDataTransfers computeMs is the comparable figure, latencyMs the fallback."""
    try:
        records = json.load(open(path))
    except (OSError, ValueError) as error:
        raise BenchError(f"cannot read trtexec times {path}: {error}") from None
    if not isinstance(records, list) or not records:
        raise BenchError(f"trtexec times {path} hold no iterations")
    key = "computeMs" if all("computeMs" in r for r in records) else "latencyMs"
    if not all(key in r for r in records):
        raise BenchError(f"trtexec times {path}: iterations without computeMs or latencyMs")
    return [float(r[key]) for r in records]


def parse_trtexec_profile(path: str) -> list[dict]:
    """Per-layer times from `--exportProfile`: the first record is {"count": N}, then one per layer."""
    records = json.load(open(path))
    layers = [r for r in records if isinstance(r, dict) and "name" in r]
    return [
        {
            "name": r["name"],
            "average_ms": float(r.get("averageMs", 0.0)),
            "median_ms": float(r.get("medianMs", r.get("averageMs", 0.0))),
            "percentage": float(r.get("percentage", 0.0)),
        }
        for r in layers
    ]


def run_trtexec(command: list[str], times_path: str) -> list[float]:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    except FileNotFoundError:
        raise BenchError("trtexec not found (JetPack installs it as /usr/src/tensorrt/bin/trtexec)") from None
    if done.returncode != 0:
        tail = [
            line for line in done.stdout.splitlines() + done.stderr.splitlines() if "[E]" in line or "Error" in line
        ]
        raise BenchError(f"trtexec failed ({done.returncode}): {(tail or ['no error line'])[-1].strip()}")
    return parse_trtexec_times(times_path)
