"""Runners: one interface over PyTorch, ONNX Runtime, TensorRT and trtexec (GPU runtimes imported lazily, on use)."""

from pipeline.runtimes.base import Runner
from pipeline.runtimes.onnxruntime_runner import OnnxRuntimeRunner, holds_qdq, judged_as_written
from pipeline.runtimes.tensorrt_runner import TRT_INSTALL, TensorRtRunner, tensorrt_available
from pipeline.runtimes.torch_runner import TorchRunner
from pipeline.runtimes.trtexec_runner import TrtexecRunner

__all__ = [
    "Runner",
    "OnnxRuntimeRunner",
    "TorchRunner",
    "TensorRtRunner",
    "TrtexecRunner",
    "TRT_INSTALL",
    "tensorrt_available",
    "holds_qdq",
    "judged_as_written",
]
