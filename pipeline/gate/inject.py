"""A slowdown of known, real cost for checking a latency gate: N depthwise 3x3 identity convolutions in front
of a model. The outputs are unchanged (the kernel is a centred 1), the work is not: what the gate benchmark
and the gate's tests inject, and what a team can use to check that its own CI gate fires."""

from pathlib import Path

import numpy as np


def slowed(source: Path, extra: int, out: Path, kernel: int = 3) -> Path:
    """`source` with `extra` depthwise identity convolutions (kernel x kernel) in front: same outputs, more work.
    A 1x1 kernel costs less per layer, for finer steps."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    name = graph.input[0].name
    channels = graph.input[0].type.tensor_type.shape.dim[1].dim_value
    weights = np.zeros((channels, 1, kernel, kernel), np.float32)
    weights[:, 0, kernel // 2, kernel // 2] = 1.0
    graph.initializer.append(numpy_helper.from_array(weights, "slowdown_identity_kernel"))
    previous = name
    new_nodes = []
    for index in range(extra):
        output = f"slowdown_{index}"
        new_nodes.append(
            helper.make_node(
                "Conv",
                [previous, "slowdown_identity_kernel"],
                [output],
                name=f"slowdown_conv_{index}",
                group=channels,
                pads=[kernel // 2] * 4,
                kernel_shape=[kernel, kernel],
            )
        )
        previous = output
    for node in graph.node:
        node.input[:] = [previous if i == name else i for i in node.input]
    nodes = new_nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out
