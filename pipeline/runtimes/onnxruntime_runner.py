"""ONNX Runtime runner with explicit, reproducible threading (the default picks every core, which makes
latency numbers depend on whatever else the machine is doing)."""

from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.runtimes.base import Runner

CPU = "CPUExecutionProvider"


def holds_qdq(path: Path) -> bool:
    """Whether an ONNX model carries QuantizeLinear/DequantizeLinear nodes (an INT8 or binary-weight model)."""
    import onnx

    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear")
               for node in onnx.load(str(path), load_external_data=False).graph.node)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None, providers: list | None = None,
                 optimize_graph: bool = True):
        """`optimize_graph=False` runs the graph as written: no fusion, so the QuantizeLinear/DequantizeLinear
        pairs of a Q/DQ model execute one by one in float around fp32 convolutions (the arithmetic TensorRT's
        INT8 kernels reproduce with exact int32 sums), instead of being fused into this CPU's integer kernels."""
        super().__init__()
        self.path = Path(path)
        self.optimize_graph = optimize_graph
        if threads is not None and threads < 1:
            raise PipelineError(f"threads must be >= 1, got {threads}")
        self.threads = threads
        self.requested_providers = list(providers) if providers else [CPU]
        self.session = None

    def _providers(self, ort) -> list:
        """Requested providers that this onnxruntime build has, CPU always last as the fallback.

        A CUDA request on a CPU-only install runs on CPU; describe() reports what was actually used.
        """
        available = set(ort.get_available_providers())
        chosen = [p for p in self.requested_providers if (p[0] if isinstance(p, tuple) else p) in available]
        if CPU not in [p[0] if isinstance(p, tuple) else p for p in chosen]:
            chosen.append(CPU)
        return chosen

    def activate_impl(self) -> None:
        import onnxruntime as ort

        if not self.path.is_file():
            raise PipelineError(f"ONNX model not found: {self.path}")
        options = ort.SessionOptions()
        # 0 = onnxruntime's default (one thread per physical core).
        options.intra_op_num_threads = self.threads or 0
        # Classifiers are chains of ops: sequential execution with one inter-op thread avoids spinning
        # threads that only steal cores from the intra-op pool.
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if self.optimize_graph
                                            else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        options.log_severity_level = 3  # errors only: warnings would clutter the CLI's stderr
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=self._providers(ort))
        except Exception as error:  # onnxruntime's errors derive from Exception only (InvalidProtobuf, Fail...)
            raise PipelineError(f"cannot load ONNX model {self.path}: {_first_line(error)}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            self.session = None
            raise PipelineError(f"{self.path} has {len(inputs)} inputs; an image classifier needs exactly one")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self.session.run([self.output_name], {self.input_name: batch})[0]
        except Exception as error:
            raise PipelineError(f"onnxruntime failed on {self.path.name} with input {tuple(batch.shape)}: "
                                f"{_first_line(error)}") from None

    def deactivate_impl(self) -> None:
        self.session = None

    def describe_impl(self) -> dict:
        import onnxruntime as ort

        providers = self.session.get_providers() if self.session is not None else None
        return {"runtime": "onnxruntime", "version": ort.__version__, "threads": self.threads,
                "inter_op_threads": 1, "providers": providers, "requested_providers":
                [p[0] if isinstance(p, tuple) else p for p in self.requested_providers], "model": str(self.path),
                **({} if self.optimize_graph else {"graph_optimization": "none (graph as written)"})}
