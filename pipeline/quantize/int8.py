"""INT8 post-training quantisation with onnxruntime's `quantize_static`, in the format the target runs fastest.

TensorRT targets get the only form TensorRT parses: QuantizeLinear/DequantizeLinear pairs, signed INT8 with
zero-point 0 for activations (per tensor) and weights (per output channel), placed on the inputs of
Conv/Gemm/MatMul/Add so TensorRT fuses them into INT8 kernels. CPU targets choose among the formats
onnxruntime's CPU kernels know, by measurement (see `stage.py`); `cpu_candidates` says which are worth trying."""

import contextlib
import io
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from pipeline.errors import PipelineError, first_line
from pipeline.quantize.calibration import BatchReader
from pipeline.quantize.cpu_isa import CpuIsa

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
# what TensorRT fuses: weighted layers and residual adds (quantising pools or activations buys nothing there)
TENSORRT_OP_TYPES = ["Conv", "Gemm", "MatMul", "Add"]


@dataclass(frozen=True)
class Int8Format:
    name: str
    activations: str  # "s8" or "u8"
    operators: str  # "qdq" (Q/DQ pairs around float ops) or "qoperator" (QLinearConv and friends)
    symmetric_activations: bool
    reduce_range: bool = False  # 7-bit weights: avoids u8 x s8 saturation on x86 without VNNI
    tensorrt_legal: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


TENSORRT_QDQ = Int8Format("s8s8-qdq-symmetric", "s8", "qdq", True, tensorrt_legal=True)


def cpu_candidates(isa: CpuIsa) -> list[Int8Format]:
    """Formats worth timing on this CPU. Without VNNI/AMX/ARM dot products, u8 activations are the fast path
    (s8 x s8 is widened first: 0.82x fp32 speed measured on an AVX2 EPYC) and weights use 7 bits."""
    fast_s8 = isa.int8_class in ("amx", "vnni", "arm-dot")
    reduce = not fast_s8 and isa.arch in ("x86_64", "AMD64")
    formats = [
        Int8Format("u8s8-qdq", "u8", "qdq", False, reduce_range=reduce),
        Int8Format("u8s8-qoperator", "u8", "qoperator", False, reduce_range=reduce),
    ]
    if fast_s8:
        formats.append(TENSORRT_QDQ)
    return formats


@dataclass(frozen=True)
class Int8Settings:
    method: str = "minmax"  # minmax | entropy | percentile
    percentile: float = 99.999
    per_channel: bool = True

    def __post_init__(self):
        if self.method not in CALIBRATION_METHODS:
            raise PipelineError(
                f"unknown calibration method {self.method!r}; choose one of {', '.join(CALIBRATION_METHODS)}"
            )


@contextlib.contextmanager
def _working_directory(path: str):
    """contextlib.chdir, which Python 3.10 (JetPack 6) lacks."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


@contextlib.contextmanager
def _quiet():
    """quantize_static logs and prints per-tensor chatter; keep the CLI's output readable."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def prepare_for_quantization(fp32: Path, out: Path) -> Path:
    """onnxruntime's pre-processing (graph optimisation + shape inference), recommended before quantize_static."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        # when its symbolic shape inference is incomplete, onnxruntime saves `sym_shape_infer_temp.onnx` and an
        # external-data file into the working directory; run it in a scratch one so the user's folder stays clean
        with _quiet(), tempfile.TemporaryDirectory() as scratch, _working_directory(scratch):
            quant_pre_process(str(fp32.resolve()), str(out.resolve()))
    except Exception as error:
        raise PipelineError(f"cannot prepare {fp32.name} for quantisation: {first_line(error)}") from None
    return out


def quantize_int8(
    model: Path,
    out: Path,
    fmt: Int8Format,
    settings: Int8Settings,
    calibration: np.ndarray,
    cache_dir: Path,
    exclude: list[str] | None = None,
    only: list[str] | None = None,
) -> Path:
    """Quantise `model` (prepared) into `out`. Calibration ranges are cached in `cache_dir` (one file per method
    and set of quantised op types), so several formats and sensitivity probes cost one calibration pass."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[settings.method]
    cache = cache_dir / f"calibration-{settings.method}{'-tensorrt-ops' if fmt.tensorrt_legal else ''}.json"
    input_name = onnx.load(str(model), load_external_data=False).graph.input[0].name
    extra = {
        "ActivationSymmetric": fmt.symmetric_activations,
        "WeightSymmetric": True,
        # TensorRT's parser rejects an int32 bias behind a DequantizeLinear ("only activation types allowed
        # as input"); it keeps biases in float and fuses them itself
        "QuantizeBias": not fmt.tensorrt_legal,
    }
    if settings.method == "percentile":
        extra["CalibPercentile"] = settings.percentile
    try:
        with _quiet():
            quantize_static(
                str(model),
                str(out),
                BatchReader(calibration, input_name),
                quant_format=QuantFormat.QDQ if fmt.operators == "qdq" else QuantFormat.QOperator,
                op_types_to_quantize=TENSORRT_OP_TYPES if fmt.tensorrt_legal else None,
                per_channel=settings.per_channel,
                reduce_range=fmt.reduce_range,
                activation_type=QuantType.QInt8 if fmt.activations == "s8" else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=exclude or None,
                nodes_to_quantize=only or None,
                calibrate_method=method,
                extra_options=extra,
                calibration_cache_path=str(cache),
            )
    except PipelineError:
        raise
    except Exception as error:
        raise PipelineError(f"INT8 quantisation of {model.name} failed: {first_line(error)}") from None
    return out


def tensorrt_qdq_problems(path: Path) -> list[str]:
    """Why TensorRT 10/11 would reject this INT8 model (the engine pre-flight's errors); empty when it is
    TensorRT-ready QDQ."""
    from pipeline.runtimes.tensorrt_preflight import preflight

    return [f"{f.node} ({f.op}): {f.message}" for f in preflight(path, "int8").errors]


def count_ops(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def weighted_nodes(path: Path) -> list[str]:
    """Names of the Conv/Gemm/MatMul nodes: the layers whose sensitivity is measured one at a time."""
    proto = onnx.load(str(path), load_external_data=False)
    return [node.name for node in proto.graph.node if node.op_type in ("Conv", "Gemm", "MatMul")]
