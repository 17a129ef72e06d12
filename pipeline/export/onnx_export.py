"""PyTorch -> one self-contained, checked ONNX file with a dynamic batch dimension (or, for a torch.export
program exported or a TorchScript module traced at a fixed batch, that batch: its graph specialised every shape to it, so no exporter can make
it dynamic; runners feed such a file its own batch at a time, `OnnxRuntimeRunner`).

Exporter choice ("auto"):
  * nn.Module and torch.export GraphModules (`ep.module()`): the torch.export-based ("dynamo") exporter.
    It only emits opset >= 18, so for a lower opset (the default 17, which TensorRT 8.5+/JetPack 5 read)
    we export at 18 and down-convert the *optimised* graph with onnx's version converter (torch's own
    conversion runs before optimisation and fails on e.g. ResNet's Squeeze/ReduceMean axes).
  * TorchScript modules, or when the dynamo path fails: the legacy TorchScript exporter (dynamo=False).
    `ep.module()` cannot take this path (it refuses the train()/eval() calls the legacy exporter makes).
The file is validated (checker full_check, strict shape inference, symbolic batch) in memory and only then
written atomically, so a failed export never replaces or truncates an existing file.
"""

import contextlib
import io
import json
import re
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx
import torch
import torch.nn as nn

from pipeline.errors import PipelineError, first_line
from pipeline.export.torchlib_cache import shared_torchlib_registry
from pipeline.fileio import atomic_write_bytes
from pipeline.preprocess import Preprocess
from pipeline.runtimes.torch_runner import restore_modes, set_eval

INPUT_NAME, OUTPUT_NAME, BATCH_DIM = "input", "logits", "batch"
DYNAMO_MIN_OPSET = 18
_PROTOBUF_LIMIT = 2**31 - 1  # a single-file ONNX model cannot exceed protobuf's 2 GB


@dataclass
class ExportResult:
    path: Path
    opset: int  # as written in the file (read back, not as requested)
    exporter: str  # "dynamo" or "torchscript"
    input_name: str
    output_name: str
    node_count: int
    op_types: dict[str, int]
    size_bytes: int
    fallback_reason: str | None = None  # why "auto" left the dynamo exporter, when it did
    fixed_batch: int | None = None  # the file's batch when it is not dynamic (a fixed-batch torch.export teacher)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["path"] = self.path.name  # the report sits beside the file; the work folder it was written in is gone
        return data


def _error_chain(error: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while error is not None and id(error) not in seen and len(chain) < 20:
        chain.append(error)
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return chain


_OP_PATTERNS = (
    re.compile(r"operator '([\w:.]+)'"),  # legacy: "Exporting the operator 'aten::linalg_inv' to ONNX ..."
    re.compile(r"OpOverload\(op='([\w.]+)'"),  # dynamo: "No ONNX function found for <OpOverload(op='aten.x'..."
    re.compile(r"target=torch\.ops\.([\w]+\.[\w]+)"),  # dynamo: "Error when translating node ... target=..."
)


def _unsupported_op(errors: list[BaseException]) -> str | None:
    for error in errors:
        for link in _error_chain(error):
            for pattern in _OP_PATTERNS:
                if match := pattern.search(str(link)):
                    return match.group(1)
    return None


_FIXED_BATCH = re.compile(r"Guard failed: \w+\.size\(\)\[0\] == (\d+)")  # ep.module() of a fixed-batch program


def _fixed_batch(errors: list[BaseException]) -> str | None:
    for error in errors:
        for link in _error_chain(error):
            if match := _FIXED_BATCH.search(str(link)):
                return match.group(1)
    return None


def _root_cause(error: BaseException) -> str:
    return first_line(_error_chain(error)[-1])


@contextlib.contextmanager
def _quiet():
    """The exporters print progress, deprecation notices and whole IR dumps on failure; the pipeline reports
    failures itself, in one line."""
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        yield


def _export_dynamo(model: nn.Module, example: torch.Tensor, opset: int, dynamic_batch: bool = True) -> onnx.ModelProto:
    with shared_torchlib_registry():  # the exports after the first skip rebuilding torch's table (torchlib_cache.py)
        program = torch.onnx.export(
            model,
            (example,),
            None,
            dynamo=True,
            opset_version=max(opset, DYNAMO_MIN_OPSET),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            # A named Dim (not Dim.AUTO): export fails loudly if the model ties the batch to a constant.
            dynamic_shapes=({0: torch.export.Dim(BATCH_DIM)},) if dynamic_batch else None,
            external_data=False,
            optimize=True,
            verbose=False,
        )
    proto = program.model_proto
    if opset < DYNAMO_MIN_OPSET:
        proto = _downgrade(proto, opset, from_opset=DYNAMO_MIN_OPSET)
    return proto


def _downgrade(proto: onnx.ModelProto, opset: int, *, from_opset: int) -> onnx.ModelProto:
    """onnx's version converter, plus a clean-up it misses: it leaves attributes that only exist in the newer
    opset (ReduceMean 18's noop_with_empty_axes) on the converted nodes, which the checker rejects. Such an
    attribute can go when it holds its default (= the old opset's behaviour); any other value is an error."""
    proto = onnx.version_converter.convert_version(proto, opset)
    for node in proto.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        known = onnx.defs.get_schema(node.op_type, opset, node.domain).attributes
        newer = onnx.defs.get_schema(node.op_type, from_opset, node.domain).attributes
        for attribute in list(node.attribute):
            if attribute.name in known:
                continue
            default = newer[attribute.name].default_value if attribute.name in newer else None
            if (
                default is None
                or not default.name
                or (onnx.helper.get_attribute_value(attribute) != onnx.helper.get_attribute_value(default))
            ):
                raise PipelineError(f"{node.op_type} attribute {attribute.name} has no opset-{opset} equivalent")
            node.attribute.remove(attribute)
    return proto


def _export_torchscript(
    model: nn.Module, example: torch.Tensor, opset: int, dynamic_batch: bool = True
) -> onnx.ModelProto:
    buffer = io.BytesIO()
    torch.onnx.export(
        model,
        (example,),
        buffer,
        dynamo=False,
        opset_version=opset,
        export_params=True,
        do_constant_folding=True,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}} if dynamic_batch else None,
    )
    return onnx.load_from_string(buffer.getvalue())


_EXPORTERS = {"dynamo": _export_dynamo, "torchscript": _export_torchscript}


def _exporter_order(model: nn.Module, exporter: str) -> list[str]:
    if exporter in _EXPORTERS:
        return [exporter]
    if exporter == "timing" and not isinstance(model, torch.fx.GraphModule):
        # variants that are only timed against each other (block tables, candidate sets): the TorchScript exporter
        # takes 0.2 s where torch.export takes 2-4 s, and a difference between two graphs exported alike does
        # not depend on the exporter
        return ["torchscript", "dynamo"]
    if exporter not in ("auto", "timing"):
        raise PipelineError(f"unknown exporter {exporter!r}; use auto, dynamo or torchscript")
    if isinstance(model, torch.jit.ScriptModule):
        return ["torchscript"]  # torch.export cannot trace TorchScript
    if isinstance(model, torch.fx.GraphModule):
        try:
            model.train(model.training)  # no-op for an ordinary module
        except NotImplementedError:
            return ["dynamo"]  # torch.export's ep.module(): the legacy exporter's train()/eval() calls fail on it
    return ["dynamo", "torchscript"]


def _dims(value_info: onnx.ValueInfoProto) -> list:
    return [
        d.dim_param if d.HasField("dim_param") else (d.dim_value if d.HasField("dim_value") else None)
        for d in value_info.type.tensor_type.shape.dim
    ]


def _validate(proto: onnx.ModelProto, preprocess: Preprocess, model_name: str, fixed_batch: int | None) -> None:
    graph = proto.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in graph.output] != [OUTPUT_NAME]:
        raise PipelineError(
            f"export of {model_name} produced inputs {[i.name for i in inputs]} and outputs "
            f"{[o.name for o in graph.output]}; expected ['{INPUT_NAME}'] and ['{OUTPUT_NAME}']"
        )
    try:
        onnx.checker.check_model(proto, full_check=True)
        onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise PipelineError(f"exported ONNX for {model_name} is invalid: {first_line(error)}") from None
    input_dims, output_dims = _dims(inputs[0]), _dims(graph.output[0])
    if len(input_dims) != 4 or input_dims[1:] != list(preprocess.input_shape):
        raise PipelineError(
            f"export of {model_name} has input shape {input_dims}, which does not match the "
            f"preprocessing's (C, H, W) = {preprocess.input_shape}"
        )
    if fixed_batch is not None:
        if input_dims[0] != fixed_batch or not output_dims or output_dims[0] != fixed_batch:
            raise PipelineError(
                f"export of {model_name} has batch {input_dims[0]} in and {output_dims[:1]} out; "
                f"its program was exported for batch {fixed_batch}"
            )
        return
    if not isinstance(input_dims[0], str):
        raise PipelineError(
            f"export of {model_name} has a fixed batch of {input_dims[0]} where a symbolic batch is "
            "needed: the model ties its batch size to a constant (e.g. x.view(1, -1), or a torch.export "
            "program with a fixed batch); re-export it with a dynamic batch dimension"
        )
    if not output_dims or not isinstance(output_dims[0], str):
        raise PipelineError(f"export of {model_name} has a fixed output batch {output_dims}; expected a symbolic one")


def _require_embedded_weights(proto: onnx.ModelProto) -> None:
    for tensor in proto.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise PipelineError(
                f"initializer {tensor.name!r} refers to external data; expected one self-contained file"
            )


def export_onnx(
    model: nn.Module, preprocess: Preprocess, path: Path, *, opset: int = 17, batch: int = 1, exporter: str = "auto"
) -> ExportResult:
    """Export `model` (input [batch, C, H, W] float32 named "input", output "logits", dynamic batch) to `path`.

    `batch` is the example batch used for tracing; the exported batch dimension is symbolic either way, except
    for a model that declares a `fixed_batch` (a torch.export program exported at batch 1, or a TorchScript
    module traced with its batch baked in: `models.load`): its graph is exported as it is, at that batch, and the
    result says so.
    """
    path = Path(path)
    model_name = getattr(model, "arch_name", None) or type(model).__name__
    if preprocess.layout != "NCHW":
        raise PipelineError(f"only NCHW models export, this one is {preprocess.layout}")
    if batch < 1:
        raise PipelineError(f"example batch must be >= 1, got {batch}")
    parameter = next(iter(model.parameters()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    fixed_batch = getattr(model, "fixed_batch", None)
    if fixed_batch is not None:
        batch = fixed_batch
    example = torch.randn(batch, *preprocess.input_shape, generator=torch.Generator().manual_seed(0)).to(device)

    errors: dict[str, BaseException] = {}
    proto, used = None, None
    previous_modes = set_eval(model)  # BatchNorm/Dropout must be exported in inference mode
    try:
        # a fixed-batch model: its own graph (a torch.export program's or a traced module's) at its batch, not
        # the wrapper that splits a batch into images
        order = _exporter_order(model.graph, exporter) if fixed_batch is not None else _exporter_order(model, exporter)
        for name in order:
            try:
                with _quiet(), torch.no_grad():
                    if fixed_batch is not None:
                        proto = _EXPORTERS[name](model.graph, example, opset, dynamic_batch=False)
                    else:
                        proto = _EXPORTERS[name](model, example, opset)
                used = name
                break
            except Exception as error:  # exporters raise anything from RuntimeError to their own error classes
                errors[name] = error
    finally:
        restore_modes(previous_modes)
    if proto is None:
        op, fixed = _unsupported_op(list(errors.values())), _fixed_batch(list(errors.values()))
        if op:
            reason = f"operator {op} has no ONNX conversion at opset {opset}"
        elif fixed:
            reason = (
                f"the model only accepts a batch of {fixed} (a torch.export program with a fixed batch?); "
                "re-export it with a dynamic batch dimension (torch.export.Dim)"
            )
        else:
            reason = "; ".join(f"{name}: {_root_cause(error)}" for name, error in errors.items())
        raise PipelineError(
            f"ONNX export of {model_name} failed ({', '.join(errors)} exporter"
            f"{'s' if len(errors) > 1 else ''}): {reason}"
        )

    proto.producer_name, proto.doc_string = "edge-pipeline", f"{model_name} exported by edge-pipeline ({used})"
    # Mobile teams read the input contract from the file itself.
    onnx.helper.set_model_props(
        proto, {"edge_pipeline.preprocess": json.dumps(preprocess.to_dict()), "edge_pipeline.model": model_name}
    )
    _validate(proto, preprocess, model_name, fixed_batch)
    _require_embedded_weights(proto)
    if proto.ByteSize() > _PROTOBUF_LIMIT:
        raise PipelineError(f"{model_name} is over 2 GB and cannot be stored as a single ONNX file")
    data = proto.SerializeToString()
    atomic_write_bytes(path, data)  # temp file in the same folder + os.replace

    written_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    fallback = f"dynamo: {_root_cause(errors['dynamo'])}" if "dynamo" in errors else None
    op_types = dict(sorted(Counter(node.op_type for node in proto.graph.node).items()))
    return ExportResult(
        path=path,
        opset=written_opset,
        exporter=used,
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        node_count=len(proto.graph.node),
        op_types=op_types,
        size_bytes=len(data),
        fallback_reason=fallback,
        fixed_batch=fixed_batch,
    )
