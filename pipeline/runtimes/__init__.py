"""Runners: one interface over PyTorch, ONNX Runtime and TensorRT (imported lazily, on use only)."""

from pipeline.runtimes.base import Runner
from pipeline.runtimes.onnxruntime_runner import OnnxRuntimeRunner
from pipeline.runtimes.tensorrt_runner import TRT_INSTALL, TensorRtRunner
from pipeline.runtimes.torch_runner import TorchRunner

__all__ = ["Runner", "OnnxRuntimeRunner", "TorchRunner", "TensorRtRunner", "TRT_INSTALL"]
