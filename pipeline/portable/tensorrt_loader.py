"""TensorRT (10 and 11): the import, engine stamps, the builder, and a session over an engine. The package's
TensorRT runner and engine builder and the device script all use these."""

from __future__ import annotations  # Python 3.8 on JetPack 5

import json
import os
import platform
import time

import numpy as np

from .cuda_buffers import cuda_backend
from .engine_facts import apply_portability, inspect_serialized, portability_mismatch
from .engine_precision import EnginePrecision, engine_precision
from .errors import BenchError
from .files import atomic_write_bytes, sha256_file
from .formats import FormatError, format_fields, read_format

STAMP_KIND, STAMP_VERSION = "engine-stamp", 1
INSTALL = "pip install tensorrt, or JetPack's python3-libnvinfer"


def import_tensorrt(install: str = INSTALL):
    """The tensorrt module, or a one-line error saying what to install (a broken native install, such as a CUDA
    driver mismatch, lands here too). The package's runners and the device script both import it here."""
    try:
        import tensorrt as trt
    except ImportError:
        raise BenchError(f"tensorrt is not installed here: {install}") from None
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BenchError(f"tensorrt failed to import ({reason}): {install}") from None
    return trt


def trt_major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


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


def build_flags(trt, precision: str, model_precision: str | None, measuring: bool = False) -> EnginePrecision:
    """The engine's precision and TensorRT 10's builder flags on this TensorRT (engine_precision.py decides, as
    it does for trtexec); `measuring`: a timing may take a strongly typed ONNX as it is, with a note."""
    return engine_precision(trt_major(trt), precision, model_precision, measuring)


def build_engine(
    onnx_path: str,
    engine_path: str,
    *,
    precision: str = "fp32",
    batch: int = 1,
    max_batch: int | None = None,
    workspace_mb: int | None = None,
    dla_core: int | None = None,
    gpu_fallback: bool = True,
    timing_cache: str | None = None,
    cuda=None,
    measuring: bool = False,
    version_compatible: bool = False,
    hardware_compatible: bool = False,
) -> dict:
    """Parse the ONNX, build a serialized engine, write it and its stamp (`<engine>.json`); return the stamp.
    `measuring`: an engine only timed (a table variant), built as its ONNX is where TensorRT 11 cannot do `precision`."""
    trt = import_tensorrt()
    if trt_major(trt) < 10:
        raise BenchError(
            f"TensorRT {trt.__version__} is older than 10 (tensor-name API); build this engine with the "
            "device's trtexec (the harness's trtexec runtime does)"
        )
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    model_precision = onnx_precision(onnx_path)
    decided = build_flags(trt, precision, model_precision, measuring)
    strongly_typed = decided.strongly_typed
    flags = [getattr(trt.BuilderFlag, flag) for flag in decided.builder_flags]
    creation = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        creation |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)  # accepted (and implied) in 11
    network = builder.create_network(creation)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx_path):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise BenchError(
            f"TensorRT's ONNX parser refused {os.path.basename(onnx_path)}: {errors} "
            "(run `pipeline check` on it for the details)"
        )
    config = builder.create_builder_config()
    for flag in flags:
        config.set_flag(flag)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the inspector then names each layer's types
    own_cuda = cuda is None
    cuda = cuda or cuda_backend()
    try:
        gpu = cuda.gpu()
    finally:
        if own_cuda:
            cuda.close()
    portability = apply_portability(trt, config, version_compatible, hardware_compatible, gpu, dla_core)
    if decided.precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
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
    atomic_write_bytes(engine_path, bytes(serialized))
    if timing_cache:
        atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    build_seconds = time.monotonic() - started
    inspected = inspect_serialized(trt, logger, serialized)  # what the network holds, not what was asked
    stamp = {
        **format_fields(STAMP_KIND, STAMP_VERSION),
        "tensorrt_version": str(trt.__version__),
        **gpu,
        "precision": decided.precision,  # what the engine computes in, which TensorRT 11 takes from the ONNX
        "precision_requested": precision,
        "precision_note": decided.note,
        "onnx_precision": model_precision,
        **inspected,  # network_precision, layer_precisions, io_tensors, inspected
        **portability,  # version_compatible, hardware_compatible
        "strongly_typed": strongly_typed,
        "builder_flags": [str(f).split(".")[-1] for f in flags],
        "dla_core": dla_core,
        "gpu_fallback": gpu_fallback if dla_core is not None else None,
        "workspace_mb": workspace_mb,
        "input": tensor.name,
        "input_shape": list(shape),
        "profile": [list(s) for s in profile_shapes] if profile_shapes else None,
        "onnx_sha256": sha256_file(onnx_path),
        "engine_sha256": sha256_file(engine_path),
        "build_seconds": round(build_seconds, 2),
        "host": platform.node(),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_bytes(engine_path + ".json", (json.dumps(stamp, indent=2) + "\n").encode())
    return stamp


def stamp_mismatch(stamp: dict, tensorrt_version: str, gpu: dict) -> str | None:
    """Why an engine with this stamp cannot be loaded here (None when it can). Engines are tied to the exact
    TensorRT version and to the GPU's compute capability, unless built version- or hardware-compatible
    (engine_facts.py), and the refusal names the option that would have made them portable."""
    try:
        read_format(stamp, STAMP_KIND, STAMP_VERSION, what="the engine's stamp", fix="rebuild it (`pipeline engine`)")
    except FormatError as error:
        return str(error)
    return portability_mismatch(stamp, tensorrt_version, gpu)


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
        if self.stamp and self.stamp.get("version_compatible"):  # built by us with its lean runtime inside
            self.runtime.engine_host_code_allowed = True
        with open(engine_path, "rb") as handle:
            self.engine = self.runtime.deserialize_cuda_engine(handle.read())
        if self.engine is None:
            raise BenchError(
                f"cannot deserialize {engine_path}: engines load only on the TensorRT version and GPU "
                f"they were built for (this is TensorRT {trt.__version__}, {self.cuda.gpu()['gpu_name']})"
            )
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
        self._free_buffers()  # a new shape: the last shape's buffers go back first
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
        return {
            "runtime": "tensorrt",
            "version": str(self.trt.__version__),
            "buffers": self.cuda.name,
            **self.cuda.gpu(),
            "engine": os.path.basename(self.engine_path),
        }

    def _free_buffers(self) -> None:
        for name in ("device_in", "device_out"):
            if getattr(self, name, None) is not None:
                self.cuda.free(getattr(self, name))
                setattr(self, name, None)

    def close(self) -> None:
        self._free_buffers()
        self.context = self.engine = None  # context before engine, engine before runtime
