"""FP16 ONNX: weights and compute in float16, graph inputs/outputs float32 by default (callers keep feeding
float32), numerically sensitive ops in float32 behind Casts. Under TensorRT 11 precision comes from the
ONNX types (strongly typed networks), so this file *is* the FP16 model there; onnxruntime's own converter
does the rewriting."""

from pathlib import Path

import onnx

from pipeline.errors import PipelineError, first_line
from pipeline.fileio import atomic_write_bytes

# Reductions and exponentials overflow or lose precision in fp16 (65504 max, 11-bit mantissa); they are
# cheap next to convolutions, so they stay float32.
SENSITIVE_OPS = [
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceLogSumExp",
    "ReduceProd",
    "GlobalAveragePool",
    "Softmax",
    "LogSoftmax",
    "Exp",
    "Log",
    "Pow",
    "Sqrt",
    "Reciprocal",
    "Div",
    "Erf",
    "LayerNormalization",
    "InstanceNormalization",
    "BatchNormalization",
    "Resize",
    "TopK",
    "ArgMax",
]


def convert_fp16(source: Path, out: Path, keep_io_float32: bool = True) -> Path:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    try:
        model = convert_float_to_float16(
            onnx.load(str(source)),
            keep_io_types=keep_io_float32,
            op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | set(SENSITIVE_OPS)),
        )
        OnnxModel(model).topological_sort()  # the converter appends its input Casts after their users
        onnx.checker.check_model(model)
    except Exception as error:
        raise PipelineError(f"FP16 conversion of {source.name} failed: {first_line(error)}") from None
    atomic_write_bytes(out, model.SerializeToString())
    return out
