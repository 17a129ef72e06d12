"""ONNX Runtime runner over the one session loader (`portable.onnxruntime_loader`, shared with the device
script): explicit, reproducible threading, CPU as the fallback provider."""

from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError, first_line
from pipeline.portable.onnxruntime_loader import CPU, onnxruntime_session, provider_name
from pipeline.runtimes.base import Runner

QDQ_PRECISIONS = ("int8", "binary")  # both are QuantizeLinear/DequantizeLinear graphs (binary: +-alpha INT8 weights)


def judged_as_written(runtime: str, precision: str) -> bool:
    """Whether onnxruntime must run a model with its graph as written (`optimize_graph=False`) to say what the
    target computes: a Q/DQ model bound for TensorRT, never this CPU's fused integer kernels, whose u8s8 sums
    saturate on CPUs without VNNI. The one rule for the quantize stage, the budget search and the bench stage."""
    return runtime == "tensorrt" and precision in QDQ_PRECISIONS


def onnx_fixed_batch(path: Path) -> int | None:
    """The batch an ONNX model's input is fixed to, or None when it is dynamic (the usual export)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {tensor.name for tensor in model.graph.initializer}
    graph_input = next(i for i in model.graph.input if i.name not in initializers)
    first = graph_input.type.tensor_type.shape.dim[0]
    return first.dim_value if first.HasField("dim_value") else None


def onnx_input_name(path: Path) -> str:
    """The name of an ONNX model's one graph input (initializers listed as inputs are not inputs)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {tensor.name for tensor in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in initializers)


def trtexec_input_name(path: Path) -> str | None:
    """The input name trtexec's shape options need, or None for a fixed batch: trtexec refuses shapes for a model
    without dynamic dimensions (NVIDIA/TensorRT#2043), and its engine runs at the batch written in its file."""
    return None if onnx_fixed_batch(path) is not None else onnx_input_name(path)


def holds_qdq(path: Path) -> bool:
    """Whether an ONNX model carries QuantizeLinear/DequantizeLinear nodes (an INT8 or binary-weight model)."""
    import onnx

    return any(
        node.op_type in ("QuantizeLinear", "DequantizeLinear")
        for node in onnx.load(str(path), load_external_data=False).graph.node
    )


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"

    def __init__(
        self, path: Path, threads: int | None = None, providers: list | None = None, optimize_graph: bool = True
    ):
        """`optimize_graph=False` runs the graph as written (see `onnxruntime_session`): how a Q/DQ model bound
        for TensorRT is judged, instead of by this CPU's fused integer kernels."""
        super().__init__()
        self.path = Path(path)
        self.optimize_graph = optimize_graph
        if threads is not None and threads < 1:
            raise PipelineError(f"threads must be >= 1, got {threads}")
        self.threads = threads
        self.requested_providers = list(providers) if providers else [CPU]
        self.session = None
        self.fixed_batch: int | None = None  # the file's batch when it is not dynamic, read on activation

    def activate_impl(self) -> None:
        if not self.path.is_file():
            raise PipelineError(f"ONNX model not found: {self.path}")
        try:
            self.session = onnxruntime_session(self.path, self.threads, self.requested_providers, self.optimize_graph)
        except Exception as error:  # onnxruntime's errors derive from Exception only (InvalidProtobuf, Fail...)
            raise PipelineError(f"cannot load ONNX model {self.path}: {first_line(error)}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            self.session = None
            raise PipelineError(f"{self.path} has {len(inputs)} inputs; an image classifier needs exactly one")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        first = inputs[0].shape[0] if inputs[0].shape else None
        self.fixed_batch = first if isinstance(first, int) else None

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        fixed = self.fixed_batch
        if fixed is not None and len(batch) != fixed:
            # a file exported at a fixed batch (a batch-1 torch.export teacher) takes its own batch at a time
            if len(batch) % fixed:
                raise PipelineError(
                    f"{self.path.name} takes batches of exactly {fixed}; a batch of {len(batch)} does not divide"
                )
            return np.concatenate([self.infer_impl(batch[i : i + fixed]) for i in range(0, len(batch), fixed)])
        try:
            return self.session.run([self.output_name], {self.input_name: batch})[0]
        except Exception as error:
            raise PipelineError(
                f"onnxruntime failed on {self.path.name} with input {tuple(batch.shape)}: {first_line(error)}"
            ) from None

    def deactivate_impl(self) -> None:
        self.session = None

    def describe_impl(self) -> dict:
        import onnxruntime as ort

        providers = self.session.get_providers() if self.session is not None else None
        return {
            "runtime": "onnxruntime",
            "version": ort.__version__,
            "includes_transfers": True,  # host arrays in and out: what an application's call costs
            "threads": self.threads,
            "inter_op_threads": 1,
            "providers": providers,
            "requested_providers": [provider_name(p) for p in self.requested_providers],
            "model": str(self.path),
            **({} if self.optimize_graph else {"graph_optimization": "none (graph as written)"}),
            **({} if self.fixed_batch is None else {"fixed_batch": self.fixed_batch}),
        }
