"""Runners: one interface over PyTorch, ONNX Runtime, TensorRT and trtexec. Each is imported on first use (and
GPU runtimes only when a runner starts), so code that needs only onnxruntime does not import torch."""

from pipeline.lazy import lazy_exports

__all__ = [
    "Runner",
    "OnnxRuntimeRunner",
    "TorchRunner",
    "TensorRtRunner",
    "TrtexecRunner",
    "TRT_INSTALL",
    "tensorrt_available",
    "holds_qdq",
    "onnx_fixed_batch",
    "onnx_input_name",
    "trtexec_input_name",
    "judged_as_written",
]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Runner": "pipeline.runtimes.base:Runner",
        "OnnxRuntimeRunner": "pipeline.runtimes.onnxruntime_runner:OnnxRuntimeRunner",
        "holds_qdq": "pipeline.runtimes.onnxruntime_runner:holds_qdq",
        "onnx_fixed_batch": "pipeline.runtimes.onnxruntime_runner:onnx_fixed_batch",
        "onnx_input_name": "pipeline.runtimes.onnxruntime_runner:onnx_input_name",
        "trtexec_input_name": "pipeline.runtimes.onnxruntime_runner:trtexec_input_name",
        "judged_as_written": "pipeline.runtimes.onnxruntime_runner:judged_as_written",
        "TRT_INSTALL": "pipeline.runtimes.tensorrt_runner:TRT_INSTALL",
        "TensorRtRunner": "pipeline.runtimes.tensorrt_runner:TensorRtRunner",
        "tensorrt_available": "pipeline.runtimes.tensorrt_runner:tensorrt_available",
        "TorchRunner": "pipeline.runtimes.torch_runner:TorchRunner",
        "TrtexecRunner": "pipeline.runtimes.trtexec_runner:TrtexecRunner",
    },
)
