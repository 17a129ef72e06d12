"""trtexec, NVIDIA's own harness: where it is, its command line, and its exported times and profiles."""

from __future__ import annotations  # Python 3.8 on JetPack 5

import json
import os
import re
import shutil
import subprocess

from .engine_precision import EnginePrecision, engine_precision
from .errors import BenchError
from .tensorrt_loader import onnx_precision

TRTEXEC_TIMING_FLAGS = ["--useCudaGraph", "--noDataTransfers", "--useSpinWait", "--separateProfileRun"]


def trtexec_path() -> str | None:
    return shutil.which("trtexec") or next((p for p in ("/usr/src/tensorrt/bin/trtexec",) if os.path.isfile(p)), None)


def parse_trtexec_banner(text: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) from the banner trtexec prints first, `&&&& RUNNING TensorRT.trtexec [TensorRT vN]`.
    N is NV_TENSORRT_VERSION: major * 10000 + minor * 100 + patch from TensorRT 10 on (NV_TENSORRT_VERSION_INT, NvInferRuntimeBase.h), and
    major * 1000 + minor * 100 + patch before it (8.5.1 prints v8501)."""
    match = re.search(r"\[TensorRT v(\d+)\]", text)
    if match is None:
        return None
    number = int(match.group(1))
    if number >= 100000:
        return number // 10000, number // 100 % 100, number % 100
    return number // 1000, number // 100 % 10, number % 100


def banner_number(major: int, minor: int, patch: int) -> int:
    """The banner's N for a version: the inverse of parse_trtexec_banner."""
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


_versions: dict = {}  # trtexec path -> its version, read once per process


def trtexec_version(path: str | None = None) -> tuple[int, int, int] | None:
    """The version of the trtexec at `path` (default: the one found here), from its own banner: the device's
    trtexec decides its flags, not the target file's range nor a Python `tensorrt` that may differ or be absent."""
    path = path or trtexec_path()
    if path is None:
        return None
    if path not in _versions:
        try:
            done = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=60)
            _versions[path] = parse_trtexec_banner(done.stdout + done.stderr)
        except (OSError, subprocess.TimeoutExpired):
            _versions[path] = None
    return _versions[path]


def require_trtexec_version(path: str | None = None) -> tuple[int, int, int]:
    version = trtexec_version(path)
    if version is None:
        raise BenchError(f"cannot read the TensorRT version of {path or trtexec_path() or 'trtexec'} from its banner")
    return version


def _shape(name: str, batch: int, input_shape) -> str:
    return f"{name}:{'x'.join(str(d) for d in (batch, *input_shape))}"


def trtexec_build_command(
    onnx_path: str,
    engine_path: str,
    *,
    tensorrt_major: int,
    precision: EnginePrecision,
    input_name: str | None,
    input_shape,
    batch: int,
    max_batch: int | None = None,
    timing_cache: str | None = None,
    workspace_mb: int | None = None,
    dla_core: int | None = None,
    gpu_fallback: bool = True,
    layer_info: str | None = None,
) -> list[str]:
    """Build once (`--saveEngine`, no timing run); the engine is then timed by trtexec_time_command, so every
    round times the same engine (each build may choose other tactics) and none pays a build. `input_name` None:
    an ONNX with a fixed batch (trtexec refuses shapes for one without dynamic dimensions)."""
    command = [trtexec_path() or "trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    if tensorrt_major >= 10:  # documented for 10 (samples/trtexec/README.md); 8.x may know only --buildOnly
        command.append("--skipInference")
    if input_name and input_shape:  # one profile from batch 1 to the target's largest, tuned for its batch
        top = max(batch, max_batch or batch)
        command += [
            f"--minShapes={_shape(input_name, 1, input_shape)}",
            f"--optShapes={_shape(input_name, batch, input_shape)}",
            f"--maxShapes={_shape(input_name, top, input_shape)}",
        ]
    command += precision.trtexec_flags()  # TensorRT 10's; none on 11 (strongly typed: the ONNX decides)
    if timing_cache:
        command.append(f"--timingCacheFile={timing_cache}")
    if workspace_mb:
        command.append(f"--memPoolSize=workspace:{workspace_mb}M")
    if dla_core is not None:
        command.append(f"--useDLACore={dla_core}")
        if gpu_fallback:
            command.append("--allowGPUFallback")
    if layer_info:  # the engine inspector's JSON: what each layer computes in (portable/engine_facts.py)
        command += ["--profilingVerbosity=detailed", f"--exportLayerInfo={layer_info}"]
    return command


def build_with_trtexec(
    onnx_path: str, engine_path: str, version: tuple, precision: str, *, measuring: bool, **options
) -> tuple[EnginePrecision, list[str]]:
    """Decide the engine's precision for this trtexec's major (engine_precision.py), build it once, and return
    the decision and the command that built it; `options`: trtexec_build_command's shapes, cache and DLA ones."""
    decided = engine_precision(version[0], precision, onnx_precision(onnx_path), measuring)
    command = trtexec_build_command(onnx_path, engine_path, tensorrt_major=version[0], precision=decided, **options)
    run_trtexec(command)
    return decided, command


def trtexec_time_command(
    engine_path: str,
    *,
    input_name: str | None,
    input_shape,
    batch: int,
    runs: int,
    warmup_ms: int,
    times_path: str,
    profile_path: str | None = None,
    dla_core: int | None = None,
) -> list[str]:
    """Time a built engine at the target's batch (`--shapes`, so a dynamic engine is not timed at batch 1)."""
    command = [
        trtexec_path() or "trtexec",
        f"--loadEngine={engine_path}",
        f"--iterations={runs}",
        "--duration=0",
        f"--warmUp={warmup_ms}",
        f"--exportTimes={times_path}",
        *TRTEXEC_TIMING_FLAGS,
    ]
    if profile_path:
        command.append(f"--exportProfile={profile_path}")
    if input_name and input_shape:
        command.append(f"--shapes={_shape(input_name, batch, input_shape)}")
    if dla_core is not None:  # a DLA engine runs on the core it was built for
        command.append(f"--useDLACore={dla_core}")
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


def run_trtexec(command: list[str], times_path: str | None = None) -> list[float]:
    """Run one trtexec command; the per-iteration times it exported (none for a build)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    except FileNotFoundError:
        raise BenchError("trtexec not found (JetPack installs it as /usr/src/tensorrt/bin/trtexec)") from None
    if done.returncode != 0:
        tail = [
            line for line in done.stdout.splitlines() + done.stderr.splitlines() if "[E]" in line or "Error" in line
        ]
        raise BenchError(f"trtexec failed ({done.returncode}): {(tail or ['no error line'])[-1].strip()}")
    return parse_trtexec_times(times_path) if times_path else []
