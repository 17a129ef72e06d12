"""ONNX export: every registry architecture, both exporters, TorchScript and torch.export inputs, parity that can
fail, and atomic writes."""

import os

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

from pipeline.errors import ParityError, PipelineError
from pipeline.export import check_parity, export_onnx, raise_on_failure
from pipeline.models import create_model, get_spec, list_models
from pipeline.preprocess import default_preprocess


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Fresh BN statistics (mean 0, var 1, weight 1) make some nets output near-zero logits (MobileNetV2: ~1e-9),
    against which any tolerance passes. Non-trivial statistics make the parity comparison mean something."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)


def build(name: str, seed: int = 0):
    channels, size, _ = get_spec(name).default_input
    size = 32 if size > 64 else size  # torchvision nets at 32 px: same graph, a fraction of the time
    torch.manual_seed(seed)
    model = create_model(name, in_channels=channels, num_classes=10, image_size=size)
    randomise_batchnorm(model, seed)
    return model.eval(), default_preprocess(channels, size, size)


def random_inputs(preprocess, n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, *preprocess.input_shape, generator=torch.Generator().manual_seed(seed))


def assert_valid_file(result, preprocess):
    proto = onnx.load(str(result.path))
    onnx.checker.check_model(proto, full_check=True)
    (graph_input,), (graph_output,) = proto.graph.input, proto.graph.output
    dims = graph_input.type.tensor_type.shape.dim
    assert (graph_input.name, graph_output.name) == ("input", "logits")
    assert dims[0].dim_param == "batch" and not dims[0].HasField("dim_value")
    assert [d.dim_value for d in dims[1:]] == list(preprocess.input_shape)
    assert result.size_bytes == result.path.stat().st_size
    assert sum(result.op_types.values()) == result.node_count == len(proto.graph.node)
    # Weights embedded, no temp file left: the folder holds exactly the one .onnx file.
    assert [p.name for p in result.path.parent.iterdir()] == [result.path.name]
    return proto


def assert_parity(model, result, preprocess, n: int = 3, tolerance: float = 1e-4):
    report = check_parity(model, result.path, {"synthetic": random_inputs(preprocess, n)}, tolerance=tolerance)
    source = report.per_source["synthetic"]
    assert source["batch_sizes"] == [1, n]  # the dynamic batch ran at two sizes
    assert source["max_abs_logit"] > 1e-2, "logits too small for the comparison to mean anything"
    assert report.max_abs_diff <= 1e-4 and report.passed, report.to_dict()
    assert report.samples == n
    return report


@pytest.mark.parametrize("name", list_models())
def test_every_architecture_exports_and_matches_pytorch(name, tmp_path):
    # TorchScript exporter here (0.1-3 s a model on the 2-core box; dynamo takes 3-25 s); the dynamo path
    # is covered below and, for every architecture, by the opt-in slow sweep.
    model, preprocess = build(name)
    result = export_onnx(model, preprocess, tmp_path / f"{name}.onnx", exporter="torchscript")
    assert (result.exporter, result.opset) == ("torchscript", 17)
    assert_valid_file(result, preprocess)
    assert_parity(model, result, preprocess)


@pytest.mark.parametrize("name, opset", [("lenet5", 17), ("resnet8", 18)])
def test_dynamo_is_the_default_exporter(name, opset, tmp_path):
    model, preprocess = build(name)
    model.train()  # export must use eval mode and leave the caller's mode alone
    result = export_onnx(model, preprocess, tmp_path / "model.onnx", opset=opset)
    assert model.training
    assert (result.exporter, result.opset, result.fallback_reason) == ("dynamo", opset, None)
    proto = assert_valid_file(result, preprocess)
    assert "edge_pipeline.preprocess" in {p.key for p in proto.metadata_props}
    assert_parity(model, result, preprocess)  # BN exported with running statistics, as TorchRunner (eval) runs it


# The exporter `pipeline build` uses, on each layout of the registry: LeNet-5 at both widths, the CIFAR ResNet's
# three stages (resnet20) and four (resnet18n), torchvision's basic (resnet18) and bottleneck (resnet50) blocks,
# MobileNetV2's inverted residuals. resnet8/14/32/34n and resnet34 are deeper or shallower copies of these (each is
# exported and compared above, resnet8 through this exporter too); PIPELINE_EVERY_DYNAMO_EXPORT=1 runs them all
# here (the whole sweep was ~100 s of the suite's 1,056 on a 2-core Zen 3; these five, ~36 s of it).
DYNAMO_KINDS = ["lenet5", "lenet5-half", "resnet20", "resnet18n", "resnet18", "resnet50", "mobilenet_v2"]


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models() if os.environ.get("PIPELINE_EVERY_DYNAMO_EXPORT") else DYNAMO_KINDS)
def test_every_architecture_with_dynamo(name, tmp_path):
    model, preprocess = build(name)
    result = export_onnx(model, preprocess, tmp_path / f"{name}.onnx")
    assert (result.exporter, result.opset) == ("dynamo", 17)
    assert_valid_file(result, preprocess)
    assert_parity(model, result, preprocess)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_torchscript_module_exports_with_the_legacy_exporter(tmp_path):
    model, preprocess = build("lenet5")
    scripted = torch.jit.script(model)
    result = export_onnx(scripted, preprocess, tmp_path / "scripted.onnx")
    assert result.exporter == "torchscript"
    assert_valid_file(result, preprocess)
    assert_parity(scripted, result, preprocess)


def test_torch_export_graph_module_exports(tmp_path):
    model, preprocess = build("resnet8")
    example = random_inputs(preprocess, 2)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    graph_module = program.module()
    result = export_onnx(graph_module, preprocess, tmp_path / "ep.onnx")
    assert result.exporter == "dynamo"
    assert_valid_file(result, preprocess)
    assert_parity(graph_module, result, preprocess)


def test_fixed_batch_graph_module_is_refused(tmp_path):
    model, preprocess = build("lenet5-half")
    graph_module = torch.export.export(model, (random_inputs(preprocess, 4),)).module()  # batch baked in as 4
    with pytest.raises(PipelineError, match="only accepts a batch of 4.*dynamic batch dimension"):
        export_onnx(graph_module, preprocess, tmp_path / "fixed.onnx")  # traced at batch 1: guard fails
    with pytest.raises(PipelineError, match="fixed batch of 4 where a symbolic batch.*dynamic batch dimension"):
        export_onnx(graph_module, preprocess, tmp_path / "fixed.onnx", batch=4)  # exports, but with batch 4 fixed
    assert not any(tmp_path.iterdir())


def test_tampered_weights_fail_parity(tmp_path):
    model, preprocess = build("resnet8")
    result = export_onnx(model, preprocess, tmp_path / "model.onnx", exporter="torchscript")
    proto = onnx.load(str(result.path))
    (gemm,) = [node for node in proto.graph.node if node.op_type == "Gemm"]
    (bias,) = [init for init in proto.graph.initializer if init.name == gemm.input[2]]
    bias.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(bias) + np.float32(1e-3), bias.name))
    onnx.save(proto, str(result.path))

    report = check_parity(model, result.path, {"synthetic": random_inputs(preprocess, 4)}, tolerance=1e-4)
    assert not report.passed
    assert report.max_abs_diff == pytest.approx(1e-3, rel=1e-2)
    assert report.per_source["synthetic"]["max_abs_logit"] < 10  # so 1e-3 is above the allowed 1e-4 * scale
    with pytest.raises(ParityError, match=r"^resnet8: .*tolerance 0\.0001") as error:
        raise_on_failure(report, "resnet8")
    assert "\n" not in str(error.value)


class RaisingForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        raise RuntimeError("boom in forward")


class UnsupportedOp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(torch.linalg.inv(x[:, 0, :4, :4]).flatten(1))  # no ONNX conversion in either exporter


def test_failed_export_leaves_existing_file_intact(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous good export")
    preprocess = default_preprocess(1, 8, 8)
    with pytest.raises(PipelineError, match="boom in forward") as error:
        export_onnx(RaisingForward(), preprocess, target)
    assert "\n" not in str(error.value)
    assert target.read_bytes() == b"previous good export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temp file left behind


def test_unsupported_op_is_named(tmp_path):
    with pytest.raises(PipelineError, match="linalg_inv") as error:
        export_onnx(UnsupportedOp(), default_preprocess(1, 8, 8), tmp_path / "model.onnx")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "model.onnx").exists()


def test_unknown_exporter_is_refused(tmp_path):
    model, preprocess = build("lenet5-half")
    with pytest.raises(PipelineError, match="unknown exporter"):
        export_onnx(model, preprocess, tmp_path / "model.onnx", exporter="tflite")


def test_an_export_through_the_shared_torchlib_registry_writes_the_same_graph(monkeypatch):
    """torchlib_cache.py: exports after the first reuse its ATen-to-ONNX registry; the ONNX must be byte for byte
    the one torch writes when it builds the registry afresh."""
    import contextlib

    from pipeline.export import onnx_export, torchlib_cache

    model, preprocess = build("resnet8")
    example = random_inputs(preprocess, 1)
    onnx_export._export_dynamo(model, example, 17)
    assert torchlib_cache._BUILT, "the registry was not cached: has torch moved ONNXRegistry.from_torchlib?"
    cached = onnx_export._export_dynamo(model, example, 17).SerializeToString()
    monkeypatch.setattr(onnx_export, "shared_torchlib_registry", contextlib.nullcontext)
    fresh = onnx_export._export_dynamo(model, example, 17).SerializeToString()
    assert cached == fresh


def test_batch_one_program_exports_at_its_own_batch_and_runs_any_batch(tmp_path):
    """issue 22 item 7: the usual torch.export (a batch-1 example, no dynamic_shapes) of a torchvision model
    specialises every shape to batch 1, so its ONNX keeps batch 1; onnxruntime feeds it one image at a time."""
    import torchvision

    from pipeline.models.load import load_model
    from pipeline.runtimes import OnnxRuntimeRunner, onnx_fixed_batch

    model = torchvision.models.resnet18(num_classes=10).eval()
    randomise_batchnorm(model)
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, 32, 32),)), tmp_path / "r18.pt2")
    loaded = load_model(tmp_path / "r18.pt2")
    result = export_onnx(loaded.model, loaded.preprocess, tmp_path / "r18.onnx")
    assert (result.fixed_batch, onnx_fixed_batch(result.path)) == (1, 1)
    images = random_inputs(loaded.preprocess, 5)
    with OnnxRuntimeRunner(result.path) as runner:
        exported = runner.infer(images.numpy())
        assert runner.describe()["fixed_batch"] == 1
    with torch.no_grad():
        np.testing.assert_allclose(exported, model(images).numpy(), atol=1e-4, rtol=1e-4)
    report = check_parity(loaded.model, result.path, {"synthetic": images})
    assert report.passed and report.per_source["synthetic"]["samples"] == 5


@pytest.mark.filterwarnings("ignore:Exporting a model while it is in training mode:UserWarning")
def test_a_fixed_batch_file_refuses_a_batch_it_cannot_split(tmp_path):
    from pipeline.runtimes import OnnxRuntimeRunner

    model, preprocess = build("lenet5-half")
    graph_module = torch.export.export(model, (random_inputs(preprocess, 2),)).module()  # batch 2 baked in
    proto = torch.onnx.export(graph_module, (random_inputs(preprocess, 2),), None, dynamo=True).model_proto
    onnx.save(proto, tmp_path / "b2.onnx")
    with OnnxRuntimeRunner(tmp_path / "b2.onnx") as runner:
        assert runner.infer(random_inputs(preprocess, 4).numpy()).shape == (4, 10)
        with pytest.raises(PipelineError, match="takes batches of exactly 2; a batch of 3 does not divide"):
            runner.infer(random_inputs(preprocess, 3).numpy())
