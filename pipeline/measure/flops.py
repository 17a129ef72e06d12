"""FLOPs of one image through an ONNX model, counted from its graph: 2 x the multiply-accumulates of every Conv,
Gemm and MatMul (and their quantised forms). Elementwise ops, pooling and normalisation are not counted: for the
CNNs the pipeline builds they are a few per cent of the arithmetic, and leaving them out keeps `achieved_gflops`
comparable with the matrix-unit peaks vendors publish. None when a shape is unknown."""

import math
from pathlib import Path

# op type -> (input index of the weight, is a convolution)
_COUNTED = {
    "Conv": (1, True),
    "QLinearConv": (3, True),
    "Gemm": (1, False),
    "MatMul": (1, False),
    "QGemm": (3, False),
    "MatMulInteger": (1, False),
    "QLinearMatMul": (3, False),
}


def onnx_flops(path: Path) -> int | None:
    import onnx

    try:
        model = _with_shapes(onnx.load(str(path)))
    except Exception:  # a graph shape inference cannot read: its FLOPs are unknown, not an error
        return None
    shapes = _known_shapes(model)  # DequantizeLinear outputs (Q/DQ weights) included: onnx infers them
    total = 0
    for node in model.graph.node:
        if node.op_type not in _COUNTED:
            continue
        index, convolution = _COUNTED[node.op_type]
        weight = shapes.get(node.input[index]) if len(node.input) > index else None
        if not weight or None in weight:
            return None
        if node.op_type in ("Gemm", "QGemm"):  # [batch, K] x weight [K, N] (transB: [N, K]), no output shape needed
            total += 2 * math.prod(weight)  # shape inference knows no contrib ops (QGemm)
            continue
        output = shapes.get(node.output[0])
        if not output or None in output[1:]:
            return None
        if convolution:  # weight [out, in/groups, k...], output [N, out, spatial...]
            total += 2 * math.prod(output[1:]) * math.prod(weight[1:])
        else:  # MatMul: weight [K, N], output [..., N]
            total += 2 * math.prod(output[1:]) * weight[0]
    return total


# onnxruntime's integer operators outside the standard domain (QOperator graphs), which onnx's shape inference
# does not know: their output has their first input's shape, or a pooled one
_SAME_SHAPE_CONTRIB = {"QLinearAdd", "QLinearMul", "QLinearLeakyRelu", "QLinearSigmoid"}
_POOLING_CONTRIB = {"QLinearGlobalAveragePool"}


def _with_shapes(model):
    """onnx's shape inference, carried across the contrib operators it stops at (one pass per operator chain)."""
    import onnx

    for _ in range(len(model.graph.node) + 1):
        model = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        shapes = _known_shapes(model)
        added = False
        for node in model.graph.node:
            if node.domain != "com.microsoft" or not node.output or node.output[0] in shapes:
                continue
            source = shapes.get(node.input[0])
            if source is None or node.op_type not in _SAME_SHAPE_CONTRIB | _POOLING_CONTRIB:
                continue
            shape = source if node.op_type in _SAME_SHAPE_CONTRIB else source[:2] + [1] * (len(source) - 2)
            element = next(
                (i.type.tensor_type.elem_type for i in model.graph.value_info if i.name == node.input[0]),
                onnx.TensorProto.UINT8,
            )
            model.graph.value_info.append(onnx.helper.make_tensor_value_info(node.output[0], element, shape))
            added = True
        if not added:
            return model
    return model


def _known_shapes(model) -> dict[str, list]:
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    for info in [*model.graph.value_info, *model.graph.input, *model.graph.output]:
        if info.type.tensor_type.HasField("shape"):
            dims = info.type.tensor_type.shape.dim
            shapes[info.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]
    return shapes
