#!/usr/bin/env python3
"""Standalone device benchmark: build TensorRT engines and time ONNX models / engines on the machine it runs on.

This one file is what `pipeline bench --host` copies to a Jetson (or any SSH host), so it needs only the
standard library and numpy, plus whichever runtime the device has: `tensorrt` (10 or 11) with `pycuda` or
`cuda-python` for device buffers, the `trtexec` binary, or `onnxruntime`. The package imports the same
functions (timing loop, statistics, engine builder, engine stamps), so a number measured on the device and one
measured locally come from identical code.

    python3 device_bench.py --spec spec.json --out result.json

spec.json: {"models": {name: onnx path}, "runtime": "tensorrt"|"onnxruntime"|"trtexec", "fallback": [...],
            "batch", "input_shape": [C, H, W], "threads", "warmup", "runs", "rounds", "max_seconds",
            "build": {"precision", "max_batch", "workspace_mb", "dla_core", "gpu_fallback", "timing_cache"}}
The result holds, per model, the median of each interleaved round, the runtime actually used, the engine
stamps, and the device facts (nvpmodel mode, jetson_clocks, JetPack/L4T, TensorRT version, temperatures).
"""

from __future__ import annotations  # Python 3.8 on JetPack 5

import argparse
import glob
import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

RESULT_FORMAT = "edge-pipeline/device-bench-v1"
STAMP_FORMAT = "edge-pipeline/engine-stamp-v1"
MIN_RUNS_WHEN_CUT = 10  # a time budget never leaves fewer samples than this (percentiles need a few)
TRTEXEC_TIMING_FLAGS = ["--useCudaGraph", "--noDataTransfers", "--useSpinWait", "--separateProfileRun"]


class BenchError(RuntimeError):
    """A failure to report in one line (the package turns it into a PipelineError)."""


# ---------------------------------------------------------------------------------------------------------------
# The timing routine and its statistics (the package's measure_latency is a thin wrapper over these)
# ---------------------------------------------------------------------------------------------------------------
def time_calls(call, *, warmup: int, runs: int, max_seconds: float | None = None) -> list[int]:
    """Nanoseconds per call: `warmup` untimed calls, then up to `runs` timed ones (stopping once `max_seconds`
    are spent, but never before 10 samples)."""
    if runs < 1 or warmup < 0:
        raise BenchError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    for _ in range(warmup):
        call()
    times_ns = []
    deadline = None if max_seconds is None else time.perf_counter_ns() + int(max_seconds * 1e9)
    for _ in range(runs):
        start = time.perf_counter_ns()
        call()
        end = time.perf_counter_ns()
        times_ns.append(end - start)
        if deadline is not None and end >= deadline and len(times_ns) >= MIN_RUNS_WHEN_CUT:
            break
    return times_ns


def summarize_ms(ms) -> dict:
    """median / mean / p90 / p99 / min / max / CV of a sample of milliseconds."""
    ms = np.asarray(ms, dtype=np.float64)
    mean = float(ms.mean())
    return {"median_ms": float(np.median(ms)), "mean_ms": mean, "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "min_ms": float(ms.min()), "max_ms": float(ms.max()),
            "cv": float(ms.std() / mean) if mean > 0 else 0.0, "runs": int(ms.size)}


def interleaved_rounds(timers: dict, rounds: int, seed: int = 0, on_round=None) -> dict:
    """Time every model once per round, in a new random order each round, so drift hits all alike.
    `timers[name]()` returns a list of milliseconds; the result keeps each round's median, their median, the
    mean in-round CV, and the statistics of all samples pooled."""
    rng = np.random.default_rng(len(timers) * 7919 + rounds + seed)
    medians = {name: [] for name in timers}
    cvs = {name: [] for name in timers}
    samples = {name: [] for name in timers}
    for _ in range(rounds):
        for name in rng.permutation(list(timers)):
            times = timers[name]()
            stats = summarize_ms(times)
            medians[name].append(stats["median_ms"])
            cvs[name].append(stats["cv"])
            samples[name].extend(times)
            if on_round is not None:
                on_round()
    return {name: {"round_medians_ms": medians[name], "median_ms": float(np.median(medians[name])),
                   "cv": float(np.mean(cvs[name])), "pooled": summarize_ms(samples[name])} for name in timers}


# ---------------------------------------------------------------------------------------------------------------
# CUDA device buffers: pycuda or cuda-python, whichever is installed (TensorRT itself allocates nothing for us)
# ---------------------------------------------------------------------------------------------------------------
class _PyCuda:
    name = "pycuda"

    def __init__(self):
        import pycuda.driver as cuda

        cuda.init()
        self.cuda = cuda
        self.device = cuda.Device(0)
        self.context = self.device.retain_primary_context()
        self.context.push()
        self.stream = cuda.Stream()

    def malloc(self, nbytes):
        return self.cuda.mem_alloc(max(1, nbytes))

    def pointer(self, buffer):
        return int(buffer)

    def stream_handle(self):
        return self.stream.handle

    def to_device(self, buffer, host):
        self.cuda.memcpy_htod_async(buffer, host, self.stream)

    def to_host(self, host, buffer):
        self.cuda.memcpy_dtoh_async(host, buffer, self.stream)

    def synchronize(self):
        self.stream.synchronize()

    def gpu(self):
        major, minor = self.device.compute_capability()
        return {"gpu_name": self.device.name(), "compute_capability": f"{major}.{minor}"}

    def close(self):
        self.context.pop()


class _CudaPython:
    name = "cuda-python"

    def __init__(self):
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart
        self.cudart = cudart
        self.stream = self._check(cudart.cudaStreamCreate())

    def _check(self, result):
        error, *values = result if isinstance(result, tuple) else (result,)
        if int(error) != 0:
            raise BenchError(f"CUDA error {error}")
        return values[0] if len(values) == 1 else values

    def malloc(self, nbytes):
        return self._check(self.cudart.cudaMalloc(max(1, nbytes)))

    def pointer(self, buffer):
        return int(buffer)

    def stream_handle(self):
        return int(self.stream)

    def to_device(self, buffer, host):
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.cudart.cudaMemcpyAsync(buffer, host.ctypes.data, host.nbytes, kind, self.stream))

    def to_host(self, host, buffer):
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.cudart.cudaMemcpyAsync(host.ctypes.data, buffer, host.nbytes, kind, self.stream))

    def synchronize(self):
        self._check(self.cudart.cudaStreamSynchronize(self.stream))

    def gpu(self):
        props = self._check(self.cudart.cudaGetDeviceProperties(0))
        name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
        return {"gpu_name": name, "compute_capability": f"{props.major}.{props.minor}"}

    def close(self):
        self.cudart.cudaStreamDestroy(self.stream)


def cuda_backend():
    """pycuda when importable, else cuda-python; a one-line error naming both when neither is."""
    for backend in (_PyCuda, _CudaPython):
        try:
            return backend()
        except ImportError:
            continue
    raise BenchError("TensorRT needs pycuda or cuda-python for device buffers: pip install pycuda (or cuda-python)")


# ---------------------------------------------------------------------------------------------------------------
# TensorRT: version checks, engine stamps, the builder (10 and 11), and a session over an engine
# ---------------------------------------------------------------------------------------------------------------
def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise BenchError("tensorrt is not installed here (pip install tensorrt, or JetPack's python3-libnvinfer)") from None
    return trt


def trt_major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def onnx_precision(path: str) -> str | None:
    """What an ONNX file computes in: int8 when it has Q/DQ nodes (op names are plain strings in the file, so
    this needs no onnx package), fp16 when it stores float16 weights, else fp32; None when fp16 vs fp32 cannot
    be told because the device has no onnx package. TensorRT 11 takes precision from the file itself."""
    data = open(path, "rb").read()
    if b"QuantizeLinear" in data:
        return "int8"
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load(path, load_external_data=False)
    return "fp16" if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer) else "fp32"


def build_flags(trt, precision: str, model_precision: str | None) -> tuple[bool, list]:
    """(strongly_typed, builder flags) for the asked precision on this TensorRT.

    TensorRT 10: weakly typed; FP16/INT8 flags let it pick lower-precision kernels (INT8 with explicit Q/DQ
    also keeps FP16 for the rest). TensorRT 11: strongly typed only; the flags are gone, so the ONNX must
    already be in the asked precision, and asking for another one is an error rather than a silent fp32 engine.
    """
    if trt_major(trt) >= 11:
        if model_precision is not None and precision != model_precision \
                and not (precision == "binary" and model_precision == "int8"):
            raise BenchError(f"TensorRT {trt.__version__} builds strongly typed networks only: it has no {precision.upper()} "
                             f"builder flag, and this ONNX is {model_precision}. Give a {precision} ONNX "
                             f"(`pipeline quantize --precision {precision}`)")
        return True, []
    flags = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8", "FP16"], "binary": ["INT8", "FP16"]}[precision]
    if precision in ("int8", "binary") and model_precision not in ("int8", None):
        raise BenchError("INT8 needs an ONNX with Q/DQ nodes (explicit quantisation; implicit calibration is not "
                         "used): run `pipeline quantize --precision int8` for a TensorRT target first")
    return False, [getattr(trt.BuilderFlag, flag) for flag in flags]


def build_engine(onnx_path: str, engine_path: str, *, precision: str = "fp32", batch: int = 1,
                 max_batch: int | None = None, workspace_mb: int | None = None, dla_core: int | None = None,
                 gpu_fallback: bool = True, timing_cache: str | None = None, cuda=None) -> dict:
    """Parse the ONNX, build a serialized engine, write it and its stamp (`<engine>.json`); return the stamp."""
    trt = import_tensorrt()
    if trt_major(trt) < 10:
        raise BenchError(f"TensorRT {trt.__version__} is older than 10 (tensor-name API); build this engine with the "
                         "device's trtexec (the harness's trtexec runtime does)")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    model_precision = onnx_precision(onnx_path)
    strongly_typed, flags = build_flags(trt, precision, model_precision)
    creation = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        creation |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)  # accepted (and implied) in 11
    network = builder.create_network(creation)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx_path):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise BenchError(f"TensorRT's ONNX parser refused {os.path.basename(onnx_path)}: {errors} "
                         "(run `pipeline check` on it for the details)")
    config = builder.create_builder_config()
    for flag in flags:
        config.set_flag(flag)
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32: TF32 tensor cores round inputs to 10 bits
    if workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if network.num_inputs != 1:
        raise BenchError(f"{onnx_path} has {network.num_inputs} inputs; an image classifier has one")
    tensor = network.get_input(0)
    shape = tuple(tensor.shape)
    profile_shapes = None
    if shape[0] == -1:  # dynamic batch: one profile from 1 to max_batch, tuned for the target's batch
        rest = tuple(shape[1:])
        if any(d < 0 for d in rest):
            raise BenchError(f"input {tensor.name} has dynamic dimensions besides the batch: {shape}")
        profile_shapes = [(1, *rest), (batch, *rest), (max(batch, max_batch or batch), *rest)]
        profile = builder.create_optimization_profile()
        profile.set_shape(tensor.name, *profile_shapes)
        config.add_optimization_profile(profile)
    if dla_core is not None:
        if builder.num_DLA_cores <= dla_core:
            raise BenchError(f"DLA core {dla_core} asked for, this device has {builder.num_DLA_cores}")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        if gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    cache_bytes = open(timing_cache, "rb").read() if timing_cache and os.path.isfile(timing_cache) else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    started = time.monotonic()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BenchError(f"TensorRT could not build an engine from {os.path.basename(onnx_path)} (see its log above)")
    _atomic_write(engine_path, bytes(serialized))
    if timing_cache:
        _atomic_write(timing_cache, bytes(config.get_timing_cache().serialize()))
    own_cuda = cuda is None
    cuda = cuda or cuda_backend()
    try:
        gpu = cuda.gpu()
    finally:
        if own_cuda:
            cuda.close()
    stamp = {"format": STAMP_FORMAT, "tensorrt_version": str(trt.__version__), **gpu,
             "precision": precision, "onnx_precision": model_precision, "strongly_typed": strongly_typed,
             "builder_flags": [str(f).split(".")[-1] for f in flags], "dla_core": dla_core,
             "gpu_fallback": gpu_fallback if dla_core is not None else None, "workspace_mb": workspace_mb,
             "input": tensor.name, "input_shape": list(shape), "profile": [list(s) for s in profile_shapes] if profile_shapes else None,
             "onnx_sha256": sha256_file(onnx_path), "engine_sha256": sha256_file(engine_path),
             "build_seconds": round(time.monotonic() - started, 2), "host": platform.node(),
             "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _atomic_write(engine_path + ".json", (json.dumps(stamp, indent=2) + "\n").encode())
    return stamp


def stamp_mismatch(stamp: dict, tensorrt_version: str, gpu: dict) -> str | None:
    """Why an engine with this stamp cannot be loaded here (None when it can). Engines are tied to the exact
    TensorRT version and to the GPU's compute capability."""
    if stamp.get("tensorrt_version") != tensorrt_version:
        return (f"engine built with TensorRT {stamp.get('tensorrt_version')}, this is TensorRT {tensorrt_version}: "
                "rebuild it here (`pipeline engine`)")
    if stamp.get("compute_capability") != gpu.get("compute_capability"):
        return (f"engine built for {stamp.get('gpu_name')} (compute {stamp.get('compute_capability')}), this GPU is "
                f"{gpu.get('gpu_name')} (compute {gpu.get('compute_capability')}): rebuild it on the target")
    return None


class TrtSession:
    """One engine, run with the name-based tensor API (set_input_shape / set_tensor_address / execute_async_v3)."""

    def __init__(self, engine_path: str, cuda=None, check_stamp: bool = True):
        trt = import_tensorrt()
        if trt_major(trt) < 10:
            raise BenchError(f"TensorRT {trt.__version__} is older than 10; time this engine with trtexec")
        self.trt = trt
        self.cuda = cuda or cuda_backend()
        self.engine_path = engine_path
        stamp_path = engine_path + ".json"
        self.stamp = json.load(open(stamp_path)) if os.path.isfile(stamp_path) else None
        if check_stamp and self.stamp is not None:
            problem = stamp_mismatch(self.stamp, str(trt.__version__), self.cuda.gpu())
            if problem:
                raise BenchError(f"{os.path.basename(engine_path)}: {problem}")
        self.logger = trt.Logger(trt.Logger.ERROR)
        self.runtime = trt.Runtime(self.logger)  # must outlive the engine
        with open(engine_path, "rb") as handle:
            self.engine = self.runtime.deserialize_cuda_engine(handle.read())
        if self.engine is None:
            raise BenchError(f"cannot deserialize {engine_path}: engines load only on the TensorRT version and GPU "
                             f"they were built for (this is TensorRT {trt.__version__}, {self.cuda.gpu()['gpu_name']})")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise BenchError(f"{engine_path} has {len(inputs)} inputs and {len(outputs)} outputs; expected 1 and 1")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.context = self.engine.create_execution_context()
        self.shape = None

    def _prepare(self, shape: tuple) -> None:
        """Buffers for one input shape, allocated once, so timed runs exclude cudaMalloc."""
        if shape == self.shape:
            return
        trt = self.trt
        if not self.context.set_input_shape(self.input_name, shape):
            raise BenchError(f"input shape {shape} is outside the engine's optimisation profile")
        out_shape = tuple(self.context.get_tensor_shape(self.output_name))
        self.host_in = np.empty(shape, dtype=trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        self.host_out = np.empty(out_shape, dtype=trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
        self.device_in = self.cuda.malloc(self.host_in.nbytes)
        self.device_out = self.cuda.malloc(self.host_out.nbytes)
        self.context.set_tensor_address(self.input_name, self.cuda.pointer(self.device_in))
        self.context.set_tensor_address(self.output_name, self.cuda.pointer(self.device_out))
        self.shape = shape

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Host float32 NCHW in, host float32 logits out (copies included: end-to-end latency)."""
        self._prepare(tuple(batch.shape))
        np.copyto(self.host_in, batch, casting="unsafe")  # fp16-I/O engines get a cast here
        self.cuda.to_device(self.device_in, self.host_in)
        if not self.context.execute_async_v3(self.cuda.stream_handle()):
            raise BenchError(f"TensorRT execution failed for {os.path.basename(self.engine_path)}")
        self.cuda.to_host(self.host_out, self.device_out)
        self.cuda.synchronize()
        return self.host_out.astype(np.float32)

    def describe(self) -> dict:
        return {"runtime": "tensorrt", "version": str(self.trt.__version__), "buffers": self.cuda.name,
                **self.cuda.gpu(), "engine": os.path.basename(self.engine_path)}

    def close(self) -> None:
        self.context = self.engine = None  # context before engine, engine before runtime


# ---------------------------------------------------------------------------------------------------------------
# trtexec: build and time with NVIDIA's own harness; parse its --exportTimes / --exportProfile JSON
# ---------------------------------------------------------------------------------------------------------------
def trtexec_path() -> str | None:
    return shutil.which("trtexec") or next((p for p in ("/usr/src/tensorrt/bin/trtexec",) if os.path.isfile(p)), None)


def trtexec_command(onnx_path: str, *, precision: str = "fp32", input_name: str | None, input_shape, batch: int,
                    runs: int, warmup_ms: int, engine_path: str | None, times_path: str, profile_path: str | None,
                    timing_cache: str | None = None, workspace_mb: int | None = None, dla_core: int | None = None,
                    gpu_fallback: bool = True, tensorrt_major: int | None = None) -> list[str]:
    """The trtexec command line for one ONNX (built, then timed) or engine file (timed); also what run folders
    record as the command to run on the device."""
    prebuilt = onnx_path.endswith((".engine", ".plan"))  # time an existing engine instead of building one
    command = [trtexec_path() or "trtexec", f"--loadEngine={onnx_path}" if prebuilt else f"--onnx={onnx_path}",
               f"--iterations={runs}", "--duration=0", f"--warmUp={warmup_ms}", f"--exportTimes={times_path}",
               *TRTEXEC_TIMING_FLAGS]
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
    return [{"name": r["name"], "average_ms": float(r.get("averageMs", 0.0)), "median_ms": float(r.get("medianMs", r.get("averageMs", 0.0))),
             "percentage": float(r.get("percentage", 0.0))} for r in layers]


def run_trtexec(command: list[str], times_path: str) -> list[float]:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    except FileNotFoundError:
        raise BenchError("trtexec not found (JetPack installs it as /usr/src/tensorrt/bin/trtexec)") from None
    if done.returncode != 0:
        tail = [line for line in done.stdout.splitlines() + done.stderr.splitlines() if "[E]" in line or "Error" in line]
        raise BenchError(f"trtexec failed ({done.returncode}): {(tail or ['no error line'])[-1].strip()}")
    return parse_trtexec_times(times_path)


# ---------------------------------------------------------------------------------------------------------------
# onnxruntime (CPU, and CUDA / TensorRT execution providers when this build has them)
# ---------------------------------------------------------------------------------------------------------------
def ort_session(path: str, threads: int | None, providers: list[str] | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    available = set(ort.get_available_providers())
    chosen = [p for p in (providers or []) if p in available] + ["CPUExecutionProvider"]
    return ort.InferenceSession(path, sess_options=options, providers=list(dict.fromkeys(chosen)))


# ---------------------------------------------------------------------------------------------------------------
# Device facts
# ---------------------------------------------------------------------------------------------------------------
def _command_output(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def device_facts() -> dict:
    """What the numbers depend on: power mode, clocks, JetPack/L4T, runtime versions, temperatures, CPU."""
    facts = {"hostname": platform.node(), "machine": platform.machine(), "python": platform.python_version(),
             "numpy": np.__version__, "cpu": None, "cpu_count": os.cpu_count()}
    try:
        facts["cpu"] = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                             if line.startswith(("model name", "Model"))), None)
    except OSError:
        pass
    nvpmodel = _command_output(["nvpmodel", "-q"])
    if nvpmodel is not None:
        mode = re.search(r"NV Power Mode:\s*(.+)", nvpmodel)
        facts["nvpmodel_mode"] = mode.group(1).strip() if mode else nvpmodel.splitlines()[0]
    clocks = _command_output(["sudo", "-n", "jetson_clocks", "--show"]) or _command_output(["jetson_clocks", "--show"])
    facts["jetson_clocks"] = None if clocks is None else ("on" if re.search(r"MinFreq=(\d+).*MaxFreq=\1", clocks) else "off or partial")
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
    facts["trtexec"] = trtexec_path()
    return facts


# ---------------------------------------------------------------------------------------------------------------
# One benchmark run from a spec (what the SSH harness executes on the device)
# ---------------------------------------------------------------------------------------------------------------
def available_runtimes() -> list[str]:
    found = []
    try:
        import tensorrt as trt

        if trt_major(trt) >= 10:
            found.append("tensorrt")
    except ImportError:
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
    raise BenchError(f"none of {', '.join([wanted, *fallback])} is installed on {platform.node()} "
                     f"(found: {', '.join(available) or 'nothing'})")


def run_spec(spec: dict, workdir: str) -> dict:
    runtime = choose_runtime(spec.get("runtime", "onnxruntime"), spec.get("fallback", []))
    batch, shape = int(spec.get("batch", 1)), tuple(spec["input_shape"])
    example = np.random.default_rng(spec.get("seed", 0)).standard_normal((batch, *shape)).astype(np.float32)
    warmup, runs = int(spec.get("warmup", 20)), int(spec.get("runs", 200))
    max_seconds, rounds = spec.get("max_seconds"), int(spec.get("rounds", 1))
    build = spec.get("build") or {}
    models = {name: os.path.join(workdir, path) for name, path in spec["models"].items()}
    result = {"format": RESULT_FORMAT, "runtime_requested": spec.get("runtime"), "runtime_used": runtime,
              "device": device_facts(), "engines": {}, "warnings": []}
    if runtime != spec.get("runtime"):
        result["warnings"].append(f"{spec.get('runtime')} is not available on {platform.node()}; measured with {runtime}")
    closers, timers = [], {}
    if runtime == "tensorrt":
        cuda = cuda_backend()
        closers.append(cuda.close)
        major = trt_major(import_tensorrt())
        for name, path in models.items():
            engine = os.path.join(workdir, "engines", f"{name}.engine")
            os.makedirs(os.path.dirname(engine), exist_ok=True)
            precision, stored = build.get("precision", "fp32"), onnx_precision(path)
            if major >= 11 and stored is not None and stored != precision:
                # strongly typed: an fp32 block-table variant cannot become fp16 by a flag; time it as it is
                result["warnings"].append(f"{name}: TensorRT {major} is strongly typed; timed as {stored}, not {precision}")
                precision = stored
            result["engines"][name] = build_engine(
                path, engine, precision=precision, batch=batch, max_batch=build.get("max_batch"),
                workspace_mb=build.get("workspace_mb"), dla_core=build.get("dla_core"),
                gpu_fallback=build.get("gpu_fallback", True),
                timing_cache=os.path.join(workdir, build.get("timing_cache", "timing.cache")), cuda=cuda)
            session = TrtSession(engine, cuda=cuda)
            closers.insert(0, session.close)
            timers[name] = (lambda s=session: [t / 1e6 for t in time_calls(lambda: s.infer(example), warmup=warmup,
                                                                            runs=runs, max_seconds=max_seconds)])
    elif runtime == "trtexec":
        major = None
        try:
            major = trt_major(import_tensorrt())
        except BenchError:
            pass
        for name, path in models.items():
            engine = os.path.join(workdir, "engines", f"{name}.engine")
            os.makedirs(os.path.dirname(engine), exist_ok=True)
            times = os.path.join(workdir, f"{name}.times.json")
            command = trtexec_command(path, precision=build.get("precision", "fp32"), input_name=spec.get("input_name"),
                                      input_shape=shape, batch=batch, runs=runs, warmup_ms=max(200, warmup),
                                      engine_path=engine, times_path=times, profile_path=None,
                                      timing_cache=os.path.join(workdir, "timing.cache"), workspace_mb=build.get("workspace_mb"),
                                      dla_core=build.get("dla_core"), gpu_fallback=build.get("gpu_fallback", True),
                                      tensorrt_major=major)
            result["engines"][name] = {"command": " ".join(command), "engine_sha256": None}
            timers[name] = (lambda c=command, t=times: run_trtexec(c, t))
    else:
        providers = spec.get("providers")
        for name, path in models.items():
            session = ort_session(path, spec.get("threads"), providers)
            input_name = session.get_inputs()[0].name
            result.setdefault("providers", session.get_providers())
            timers[name] = (lambda s=session, i=input_name: [t / 1e6 for t in time_calls(
                lambda: s.run(None, {i: example}), warmup=warmup, runs=runs, max_seconds=max_seconds)])
    try:
        result["models"] = interleaved_rounds(timers, rounds, seed=int(spec.get("seed", 0)))
    finally:
        for close in closers:
            close()
    for name, engine in result["engines"].items():
        path = os.path.join(workdir, "engines", f"{name}.engine")
        if os.path.isfile(path) and engine.get("engine_sha256") is None:
            engine["engine_sha256"] = sha256_file(path)
    result["settings"] = {"batch": batch, "input_shape": list(shape), "threads": spec.get("threads"), "warmup": warmup,
                          "runs": runs, "rounds": rounds, "max_seconds": max_seconds}
    result["device"]["temperatures_after_c"] = device_facts()["temperatures_c"]
    return result


def _atomic_write(path: str, data: bytes) -> None:
    # pipeline.fileio.atomic_write_bytes, restated: this file runs on devices without the package
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Build TensorRT engines and time models on this device.")
    parser.add_argument("--spec", required=True, help="spec JSON (see the module docstring)")
    parser.add_argument("--out", required=True, help="where to write the result JSON")
    parser.add_argument("--facts", action="store_true", help="only record the device facts")
    args = parser.parse_args(argv)
    try:
        spec = json.load(open(args.spec))
        workdir = os.path.dirname(os.path.abspath(args.spec))
        result = {"format": RESULT_FORMAT, "device": device_facts()} if args.facts else run_spec(spec, workdir)
    except BenchError as error:
        result = {"format": RESULT_FORMAT, "error": str(error), "device": device_facts()}
        _atomic_write(args.out, (json.dumps(result, indent=1) + "\n").encode())
        print(f"device_bench: {error}", file=sys.stderr)
        return 1
    _atomic_write(args.out, (json.dumps(result, indent=1) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
