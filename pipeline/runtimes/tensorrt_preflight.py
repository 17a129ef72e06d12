"""Pre-flight check of an ONNX file for TensorRT, without TensorRT: what its ONNX parser will refuse, and
which layers will miss the tensor cores, found on the laptop instead of on the device.

Errors (the parser refuses, or the engine would not be what was asked for):
- operators TensorRT's ONNX parser does not implement (integer-arithmetic ops such as QLinearConv and
  ConvInteger that onnxruntime's QOperator format produces, ORT contrib ops, sequences, strings);
- Q/DQ with a non-zero zero point or a non-int8 quantised type (TensorRT is symmetric INT8 only);
- tensors of types TensorRT has no kernels for (double, strings, complex, unsigned ints wider than 8 bits).
Warnings: Conv/Gemm/MatMul whose channel counts are not multiples of 8 (fp16) or 32 (int8) run on slower,
non-tensor-core kernels: pruning that leaves odd counts can make a model slower. Image-side channels of the
first layer and the class count of the last are noted, not warned about: nothing can change them.
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.errors import PipelineError, first_line

# The parser's "N" rows (onnx-tensorrt docs/operators.md) that a classifier export can realistically contain.
UNSUPPORTED_OPS = {
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
    "DynamicQuantizeLinear",
    "BitShift",
    "Compress",
    "ConcatFromSequence",
    "Det",
    "Hardmax",
    "MaxRoiPool",
    "MaxUnpool",
    "Multinomial",
    "NegativeLogLikelihoodLoss",
    "RandomNormal",
    "RandomNormalLike",
    "RoiAlign",
    "SequenceAt",
    "SequenceConstruct",
    "SequenceEmpty",
    "SequenceErase",
    "SequenceInsert",
    "SequenceLength",
    "Shrink",
    "SoftmaxCrossEntropyLoss",
    "SplitToSequence",
    "StringNormalizer",
    "TfIdfVectorizer",
    "Unique",
}
STANDARD_DOMAINS = {"", "ai.onnx"}
# onnx.TensorProto data types TensorRT cannot hold (names keep the report readable)
UNSUPPORTED_DTYPES = {
    11: "double",
    8: "string",
    14: "complex64",
    15: "complex128",
    4: "uint16",
    12: "uint32",
    13: "uint64",
    5: "int16",
}
ALIGNMENT = {"fp32": None, "fp16": 8, "int8": 32, "binary": 32}


@dataclass
class Finding:
    severity: str  # "error", "warning" or "note"
    kind: str  # "unsupported-op", "zero-point", "dtype", "alignment"
    node: str
    op: str
    message: str


@dataclass
class PreflightReport:
    model: str
    precision: str
    opset: int
    ops: dict[str, int]
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "precision": self.precision,
            "opset": self.opset,
            "ops": self.ops,
            "ok": self.ok,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "findings": [asdict(f) for f in self.findings],
        }

    def format(self, limit: int | None = 25) -> str:
        verdict = (
            "TensorRT's ONNX parser should accept it"
            if self.ok
            else f"{len(self.errors)} problem(s) TensorRT will refuse"
        )
        lines = [
            f"{self.model} ({self.precision}, opset {self.opset}): {verdict}; "
            f"{len(self.warnings)} tensor-core alignment warning(s)"
        ]
        shown = self.findings if limit is None else self.findings[:limit]
        lines += [f"  {f.severity:<7} {f.kind:<14} {f.node} ({f.op}): {f.message}" for f in shown]
        if len(shown) < len(self.findings):
            lines.append(f"  ... {len(self.findings) - len(shown)} more (--json lists all)")
        return "\n".join(lines)


def preflight(path: Path, precision: str = "fp32") -> PreflightReport:
    """Check an ONNX file for TensorRT. `precision` is what the engine will run in (sets the alignment rule)."""
    import onnx
    from onnx import numpy_helper

    if precision not in ALIGNMENT:
        raise PipelineError(f"precision must be one of {', '.join(ALIGNMENT)}, not {precision!r}")
    try:
        model = onnx.load(str(path))
    except FileNotFoundError:
        raise PipelineError(f"ONNX file not found: {path}") from None
    except Exception as error:  # protobuf DecodeError and friends
        raise PipelineError(f"{path} is not a readable ONNX file: {first_line(error)}") from None
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:
        pass  # shapes help the alignment check; the op and dtype checks do not need them
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in STANDARD_DOMAINS), 0)
    initializers = {t.name: t for t in graph.initializer}
    ops: dict[str, int] = {}
    findings: list[Finding] = []
    for node in graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
        name = node.name or (node.output[0] if node.output else node.op_type)
        if node.domain not in STANDARD_DOMAINS:
            findings.append(
                Finding(
                    "error",
                    "unsupported-op",
                    name,
                    f"{node.domain}.{node.op_type}",
                    f"custom-domain op ({node.domain}): TensorRT needs a plugin for it",
                )
            )
        elif node.op_type in UNSUPPORTED_OPS:
            hint = (
                " (onnxruntime's QOperator/integer format; export INT8 as symmetric Q/DQ instead)"
                if node.op_type
                in {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"}
                else ""
            )
            findings.append(
                Finding("error", "unsupported-op", name, node.op_type, f"not supported by TensorRT's ONNX parser{hint}")
            )
        if node.op_type in {"QuantizeLinear", "DequantizeLinear"}:
            findings.extend(_check_qdq(node, name, initializers, numpy_helper))
    findings.extend(_check_dtypes(graph))
    findings.extend(_check_alignment(graph, initializers, ALIGNMENT[precision], precision))
    return PreflightReport(str(path), precision, opset, dict(sorted(ops.items())), findings)


def _check_qdq(node, name: str, initializers: dict, numpy_helper) -> list[Finding]:
    if len(node.input) < 3 or not node.input[2]:
        # no zero point: 0 by definition, but QuantizeLinear then produces uint8 unless output_dtype says otherwise
        if node.op_type == "QuantizeLinear" and not any(a.name == "output_dtype" for a in node.attribute):
            return [
                Finding(
                    "error",
                    "zero-point",
                    name,
                    node.op_type,
                    "no zero point, so it quantises to uint8; TensorRT needs int8 (a zero point of type int8)",
                )
            ]
        return []
    zero_point = initializers.get(node.input[2])
    if zero_point is None:
        return [
            Finding(
                "error",
                "zero-point",
                name,
                node.op_type,
                "zero point is computed at run time; TensorRT needs a constant zero point of 0",
            )
        ]
    values = numpy_helper.to_array(zero_point)
    found = []
    if zero_point.data_type == 6:  # INT32: onnxruntime's quantised bias
        found.append(
            Finding(
                "error",
                "zero-point",
                name,
                node.op_type,
                "int32 (bias) DequantizeLinear: TensorRT's "
                "Q/DQ take int8 only (leave biases in float; TensorRT folds them itself)",
            )
        )
    elif zero_point.data_type != 3:  # INT8
        found.append(
            Finding(
                "error",
                "zero-point",
                name,
                node.op_type,
                f"quantised type is {values.dtype}, TensorRT supports int8 Q/DQ (symmetric S8S8)",
            )
        )
    if values.size and (values != 0).any():
        found.append(
            Finding(
                "error",
                "zero-point",
                name,
                node.op_type,
                f"non-zero zero point ({int(values.flat[int((values != 0).argmax())])}): TensorRT "
                "quantisation is symmetric",
            )
        )
    return found


def _check_dtypes(graph) -> list[Finding]:
    seen: dict[str, str] = {}
    tensors = [*graph.input, *graph.output, *graph.value_info]
    for info in tensors:
        element = info.type.tensor_type.elem_type
        if element in UNSUPPORTED_DTYPES:
            seen.setdefault(info.name, UNSUPPORTED_DTYPES[element])
    for tensor in graph.initializer:
        if tensor.data_type in UNSUPPORTED_DTYPES:
            seen.setdefault(tensor.name, UNSUPPORTED_DTYPES[tensor.data_type])
    return [
        Finding("error", "dtype", name, "-", f"tensor of type {dtype}, which TensorRT has no kernels for")
        for name, dtype in seen.items()
    ]


def _check_alignment(graph, initializers: dict, multiple: int | None, precision: str) -> list[Finding]:
    if multiple is None:
        return []
    graph_inputs = {i.name for i in graph.input} - set(initializers)
    graph_outputs = {o.name for o in graph.output}
    dequantized = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    found = []
    for node in graph.node:
        if node.op_type not in {"Conv", "Gemm", "MatMul", "ConvTranspose"} or len(node.input) < 2:
            continue
        weight = initializers.get(dequantized.get(node.input[1], node.input[1]))
        if weight is None or len(weight.dims) < 2:
            continue
        dims = list(weight.dims)
        if node.op_type == "Conv":
            groups = next((a.i for a in node.attribute if a.name == "group"), 1)
            outputs, inputs = dims[0], dims[1] * groups
            if groups > 1 and groups == outputs:
                continue  # depthwise: no tensor-core GEMM either way
        elif node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            outputs, inputs = (dims[0], dims[1]) if trans_b else (dims[1], dims[0])
        else:
            inputs, outputs = dims[-2], dims[-1]
        name = node.name or node.output[0]
        source = dequantized.get(node.input[0], node.input[0])
        for label, count, at_boundary in (
            ("input", inputs, _fed_by(graph, source, graph_inputs)),
            ("output", outputs, _feeds(graph, node.output[0], graph_outputs)),
        ):
            if count % multiple:
                severity = "note" if at_boundary else "warning"
                why = " (image channels / class count: fixed by the task)" if at_boundary else ""
                found.append(
                    Finding(
                        severity,
                        "alignment",
                        name,
                        node.op_type,
                        f"{count} {label} channels, not a multiple of {multiple} for {precision} tensor cores{why}",
                    )
                )
    return found


def _fed_by(graph, tensor: str, graph_inputs: set[str]) -> bool:
    """True when `tensor` is a graph input or comes from one through element-wise/quantisation ops only."""
    producers = {o: n for n in graph.node for o in n.output}
    for _ in range(8):
        if tensor in graph_inputs:
            return True
        node = producers.get(tensor)
        if node is None or node.op_type not in {
            "QuantizeLinear",
            "DequantizeLinear",
            "Cast",
            "Identity",
            "Sub",
            "Div",
            "Mul",
        }:
            return False
        tensor = node.input[0]
    return False


def _feeds(graph, tensor: str, graph_outputs: set[str]) -> bool:
    """True when `tensor` reaches a graph output through element-wise/quantisation ops only."""
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    for _ in range(8):
        if tensor in graph_outputs:
            return True
        following = consumers.get(tensor, [])
        if len(following) != 1 or following[0].op_type not in {
            "QuantizeLinear",
            "DequantizeLinear",
            "Cast",
            "Identity",
            "Add",
            "Softmax",
            "Reshape",
            "Flatten",
        }:
            return False
        tensor = following[0].output[0]
    return False
