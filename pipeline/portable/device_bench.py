"""Standalone device benchmark: build TensorRT engines and time ONNX models / engines on the machine it runs on.

`pipeline bench --host` copies this folder (`pipeline/portable/`) to a Jetson or any SSH host and runs

    python3 -m portable.device_bench --spec spec.json --out result.json

It needs only the standard library and numpy, plus whichever runtime the device has: `tensorrt` (10 or 11) with
`pycuda` or `cuda-python` for device buffers (without them the `trtexec` binary is used), or `onnxruntime`. The
package's runners load sessions and build engines with the same modules, so a number measured on the device and
one measured locally come from identical code.

spec.json: {"models": {name: onnx path}, "runtime": "tensorrt"|"onnxruntime"|"trtexec", "fallback": [...],
            "batch", "input_shape": [C, H, W], "input_names": {name: input or None for a fixed batch},
            "threads", "warmup", "runs", "max_seconds",
            "rounds" (the most), "min_rounds", "rounds_max_seconds", "enough" (a `paired.SlowdownQuestion`),
            "build": {"precision", "max_batch", "workspace_mb", "dla_core", "gpu_fallback", "timing_cache",
                      "deliverable" (true: refuse an engine that is not in the asked precision)}}
The result holds, per model, the median of each interleaved round, the runtime actually used, the engine
stamps, and the device facts (nvpmodel mode, jetson_clocks, JetPack/L4T, TensorRT version, temperatures).
"""

from __future__ import annotations  # Python 3.8 on JetPack 5

import argparse
import glob
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys

import numpy as np

from .cuda_buffers import cuda_backend
from .engine_facts import read_layer_info
from .errors import BenchError
from .files import atomic_write_bytes, sha256_file
from .formats import format_fields
from .onnxruntime_loader import onnxruntime_session
from .paired import SlowdownQuestion
from .tensorrt_loader import (
    STAMP_KIND,
    STAMP_VERSION,
    TrtSession,
    build_engine,
    import_tensorrt,
    trt_major,
)
from .timing import interleaved_rounds, time_calls
from .trtexec_loader import (
    build_with_trtexec,
    require_trtexec_version,
    run_trtexec,
    trtexec_path,
    trtexec_time_command,
    trtexec_version,
)

RESULT_FORMAT = "edge-pipeline/device-bench-v1"


def _command_output(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def device_facts() -> dict:
    """What the numbers depend on: power mode, clocks, JetPack/L4T, runtime versions, temperatures, CPU."""
    facts = {
        "hostname": platform.node(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu": None,
        "cpu_count": os.cpu_count(),
    }
    try:
        facts["cpu"] = next(
            (
                line.split(":", 1)[1].strip()
                for line in open("/proc/cpuinfo")
                if line.startswith(("model name", "Model"))
            ),
            None,
        )
    except OSError:
        pass
    nvpmodel = _command_output(["nvpmodel", "-q"])
    if nvpmodel is not None:
        mode = re.search(r"NV Power Mode:\s*(.+)", nvpmodel)
        facts["nvpmodel_mode"] = mode.group(1).strip() if mode else nvpmodel.splitlines()[0]
    clocks = _command_output(["sudo", "-n", "jetson_clocks", "--show"]) or _command_output(["jetson_clocks", "--show"])
    facts["jetson_clocks"] = (
        None if clocks is None else ("on" if re.search(r"MinFreq=(\d+).*MaxFreq=\1", clocks) else "off or partial")
    )
    if os.path.isfile("/etc/nv_tegra_release"):
        facts["l4t"] = open("/etc/nv_tegra_release").readline().strip()
        facts["jetpack"] = _command_output(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"])
    temperatures = {}
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        try:
            kind = open(f"{zone}/type").read().strip()
            temperatures[kind] = int(open(f"{zone}/temp").read().strip()) / 1000
        except (OSError, ValueError):
            continue
    facts["temperatures_c"] = temperatures
    for module in ("tensorrt", "onnxruntime"):
        try:
            facts[f"{module}_version"] = __import__(module).__version__
        except ImportError:
            facts[f"{module}_version"] = None
    facts["cuda_buffers"] = cuda_buffer_packages()
    facts["trtexec"] = trtexec_path()
    version = trtexec_version() if facts["trtexec"] else None
    facts["trtexec_version"] = ".".join(str(part) for part in version) if version else None
    return facts


# ---------------------------------------------------------------------------------------------------------------
# One benchmark run from a spec (what the SSH harness executes on the device)
# ---------------------------------------------------------------------------------------------------------------
def cuda_buffer_packages() -> list[str]:
    """The CUDA buffer packages importable here (cuda_buffers.py uses the first)."""
    return [name for name in ("pycuda", "cuda") if importlib.util.find_spec(name) is not None]


def available_runtimes() -> list[str]:
    found = []
    try:
        # the Python API needs device buffers from pycuda or cuda-python; without them trtexec times the engine
        if trt_major(import_tensorrt()) >= 10 and cuda_buffer_packages():
            found.append("tensorrt")
    except BenchError:
        pass
    if trtexec_path():
        found.append("trtexec")
    if importlib.util.find_spec("onnxruntime") is not None:
        found.append("onnxruntime")
    return found


def choose_runtime(wanted: str, fallback: list[str]) -> str:
    available = available_runtimes()
    for runtime in [wanted, *fallback]:
        if runtime in available:
            return runtime
    raise BenchError(
        f"none of {', '.join([wanted, *fallback])} is installed on {platform.node()} "
        f"(found: {', '.join(available) or 'nothing'})"
    )


def trtexec_build(
    onnx: str, engine: str, version, build: dict, input_name, shape, batch: int, workdir: str, measuring: bool
) -> dict:
    """Build `engine` once with the device's trtexec (each timed round then loads it) and return its stamp."""
    decided, command = build_with_trtexec(
        onnx,
        engine,
        version,
        build.get("precision", "fp32"),
        measuring=measuring,
        input_name=input_name,
        input_shape=shape,
        batch=batch,
        max_batch=build.get("max_batch"),
        timing_cache=os.path.join(workdir, "timing.cache"),
        workspace_mb=build.get("workspace_mb"),
        dla_core=build.get("dla_core"),
        gpu_fallback=build.get("gpu_fallback", True),
        layer_info=engine + ".layers.json",
    )
    return {
        **format_fields(STAMP_KIND, STAMP_VERSION),
        "built_by": "trtexec",
        "tensorrt_version": ".".join(str(part) for part in version),
        "precision": decided.precision,
        "precision_requested": build.get("precision", "fp32"),
        "precision_note": decided.note,
        "strongly_typed": decided.strongly_typed,
        **read_layer_info(engine + ".layers.json"),  # what the network holds, not what was asked
        "build_command": " ".join(command),
        "engine_sha256": None,  # filled in once the engine is written
    }


def run_spec(spec: dict, workdir: str) -> dict:
    runtime = choose_runtime(spec.get("runtime", "onnxruntime"), spec.get("fallback", []))
    batch, shape = int(spec.get("batch", 1)), tuple(spec["input_shape"])
    example = np.random.default_rng(spec.get("seed", 0)).standard_normal((batch, *shape)).astype(np.float32)
    warmup, runs = int(spec.get("warmup", 20)), int(spec.get("runs", 200))
    max_seconds, rounds = spec.get("max_seconds"), int(spec.get("rounds", 1))
    build = spec.get("build") or {}
    models = {name: os.path.join(workdir, path) for name, path in spec["models"].items()}
    result = {
        "format": RESULT_FORMAT,
        "runtime_requested": spec.get("runtime"),
        "runtime_used": runtime,
        "device": device_facts(),
        "engines": {},
        "warnings": [],
    }
    if runtime != spec.get("runtime"):
        result["warnings"].append(
            f"{spec.get('runtime')} is not available on {platform.node()}; measured with {runtime}"
        )
    closers, timers = [], {}
    # a deliverable engine (the engine stage) must be what was asked; a timed one may be built as its ONNX is
    measuring = not build.get("deliverable", False)
    if runtime == "tensorrt":
        cuda = cuda_backend()
        closers.append(cuda.close)
        for name, path in models.items():
            engine = os.path.join(workdir, "engines", f"{name}.engine")
            os.makedirs(os.path.dirname(engine), exist_ok=True)
            result["engines"][name] = build_engine(
                path,
                engine,
                precision=build.get("precision", "fp32"),
                batch=batch,
                max_batch=build.get("max_batch"),
                workspace_mb=build.get("workspace_mb"),
                dla_core=build.get("dla_core"),
                gpu_fallback=build.get("gpu_fallback", True),
                timing_cache=os.path.join(workdir, build.get("timing_cache", "timing.cache")),
                cuda=cuda,
                measuring=measuring,
                version_compatible=build.get("version_compatible", False),
                hardware_compatible=build.get("hardware_compatible", False),
            )
            if result["engines"][name].get("precision_note"):
                result["warnings"].append(f"{name}: {result['engines'][name]['precision_note']}")
            session = TrtSession(engine, cuda=cuda)
            closers.insert(0, session.close)
            timers[name] = lambda s=session: [
                t / 1e6 for t in time_calls(lambda: s.infer(example), warmup=warmup, runs=runs, max_seconds=max_seconds)
            ]
    elif runtime == "trtexec":
        version = require_trtexec_version()  # the device's own trtexec decides its flags
        input_names = spec.get("input_names") or {}
        for name, path in models.items():
            engine = os.path.join(workdir, "engines", f"{name}.engine")
            os.makedirs(os.path.dirname(engine), exist_ok=True)
            stamp = trtexec_build(path, engine, version, build, input_names.get(name), shape, batch, workdir, measuring)
            result["engines"][name] = stamp
            if stamp.get("precision_note"):
                result["warnings"].append(f"{name}: {stamp['precision_note']}")
            times = os.path.join(workdir, f"{name}.times.json")
            command = trtexec_time_command(
                engine,
                input_name=input_names.get(name),
                input_shape=shape,
                batch=batch,
                runs=runs,
                warmup_ms=max(200, warmup),
                times_path=times,
                dla_core=build.get("dla_core"),
            )
            stamp["command"] = " ".join(command)
            timers[name] = lambda c=command, t=times: run_trtexec(c, t)
    else:
        providers = spec.get("providers")
        for name, path in models.items():
            session = onnxruntime_session(path, spec.get("threads"), providers)
            input_name = session.get_inputs()[0].name
            result.setdefault("providers", session.get_providers())
            timers[name] = lambda s=session, i=input_name: [
                t / 1e6
                for t in time_calls(
                    lambda: s.run(None, {i: example}), warmup=warmup, runs=runs, max_seconds=max_seconds
                )
            ]
    try:
        # the package's rounds policy, followed here: the minimum, then more while the question is unanswered
        enough = spec.get("enough")
        result["models"] = interleaved_rounds(
            timers,
            rounds,
            seed=int(spec.get("seed", 0)),
            min_rounds=spec.get("min_rounds"),
            enough=None if enough is None else SlowdownQuestion.from_dict(enough),
            max_seconds=spec.get("rounds_max_seconds"),
        )
    finally:
        for close in closers:
            close()
    for name, engine in result["engines"].items():
        path = os.path.join(workdir, "engines", f"{name}.engine")
        if os.path.isfile(path) and engine.get("engine_sha256") is None:
            engine["engine_sha256"] = sha256_file(path)
    result["settings"] = {
        "batch": batch,
        "input_shape": list(shape),
        "threads": spec.get("threads"),
        "warmup": warmup,
        "runs": runs,
        "rounds": rounds,
        "min_rounds": spec.get("min_rounds"),
        "enough": spec.get("enough"),
        "max_seconds": max_seconds,
    }
    # one definition of latency per runtime: trtexec's --noDataTransfers times GPU compute only; the TensorRT
    # session and onnxruntime time the call with its copies in and out
    result["includes_transfers"] = runtime != "trtexec"
    result["device"]["temperatures_after_c"] = device_facts()["temperatures_c"]
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Build TensorRT engines and time models on this device.")
    parser.add_argument("--spec", required=True, help="spec JSON (see the module docstring)")
    parser.add_argument("--out", required=True, help="where to write the result JSON")
    parser.add_argument("--facts", action="store_true", help="only record the device facts")
    args = parser.parse_args(argv)
    try:
        spec = json.load(open(args.spec))
        workdir = os.path.dirname(os.path.abspath(args.spec))
        result, status = (
            ({"format": RESULT_FORMAT, "device": device_facts()} if args.facts else run_spec(spec, workdir)),
            0,
        )
    except BenchError as error:
        result, status = {"format": RESULT_FORMAT, "error": str(error), "device": device_facts()}, 1
        print(f"device_bench: {error}", file=sys.stderr)
    atomic_write_bytes(args.out, (json.dumps(result, indent=1) + "\n").encode())
    return status


if __name__ == "__main__":
    sys.exit(main())
