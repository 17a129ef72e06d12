"""Engines without a GPU: the pre-flight check, the builder's TensorRT 10/11 policy, trtexec command lines and
result parsing, engine stamps, and the engine stage's on-device instructions. The TensorRT tests at the end
build real engines and skip (with the reason) where TensorRT or a GPU is missing."""

import json
import types

import numpy as np
import onnx
import pytest
import torch
from conftest import invoke_cli, needs_fmnist
from onnx import TensorProto, helper, numpy_helper

from pipeline.bench.stage import BenchStage
from pipeline.engine.stage import EngineStage
from pipeline.errors import PipelineError
from pipeline.export import export_onnx
from pipeline.export.stage import ExportConfig, ExportStage
from pipeline.models import create_model
from pipeline.portable import tensorrt_loader, trtexec_loader
from pipeline.portable.errors import BenchError
from pipeline.preprocess import default_preprocess, preprocess_from_onnx
from pipeline.quantize.stage import QuantizeStage
from pipeline.recipes.context import prepare
from pipeline.recipes.options import BuildOptions
from pipeline.recipes.plan import handed_on_precision, stages_to_run
from pipeline.recipes.stage_specs import bench_config, engine_config, quantize_config
from pipeline.run_view import summarize
from pipeline.runtimes.tensorrt_preflight import preflight
from pipeline.runtimes.tensorrt_runner import tensorrt_available
from pipeline.stage import RunFolder
from pipeline.targets import load_target


@pytest.fixture(scope="module")
def lenet_onnx(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("engine") / "lenet5.onnx"
    export_onnx(
        create_model("lenet5", in_channels=1, num_classes=10).eval(),
        default_preprocess(1, 28, 28),
        path,
        exporter="torchscript",
    )
    return path


def _graph_model(tmp_path, nodes, initializers, inputs, outputs, name="g.onnx", opsets=(("", 17),)):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _conv_model(tmp_path, channels_in, channels_mid, name="conv.onnx"):
    """input -> Conv(channels_in -> channels_mid) -> Conv(channels_mid -> 16) -> output"""
    w1 = numpy_helper.from_array(np.zeros((channels_mid, channels_in, 3, 3), np.float32), "w1")
    w2 = numpy_helper.from_array(np.zeros((16, channels_mid, 3, 3), np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["h"], name="conv1"),
        helper.make_node("Conv", ["h", "w2"], ["out"], name="conv2"),
    ]
    return _graph_model(
        tmp_path,
        nodes,
        [w1, w2],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, channels_in, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 16, 4, 4])],
        name,
    )


def test_an_exported_classifier_passes_preflight(lenet_onnx):
    report = preflight(lenet_onnx, "fp16")
    assert report.ok and report.ops["Conv"] >= 2
    # the image's 1 channel and the 10 classes cannot be aligned: noted, not warned ...
    notes = {f.message.split(",")[0] for f in report.findings if f.severity == "note"}
    assert notes == {"1 input channels", "10 output channels"}
    # ... but LeNet-5's classic widths (6 and 84) miss the fp16 tensor cores
    assert {w.message.split(",")[0] for w in report.warnings} == {
        "6 output channels",
        "6 input channels",
        "84 output channels",
        "84 input channels",
    }


def test_alignment_warnings_follow_the_precision(tmp_path):
    path = _conv_model(tmp_path, channels_in=3, channels_mid=24)
    fp16, int8, fp32 = preflight(path, "fp16"), preflight(path, "int8"), preflight(path, "fp32")
    assert fp16.ok and not fp16.warnings  # 24 and 16 are multiples of 8
    assert {w.node for w in int8.warnings} == {"conv1", "conv2"}  # 24 is not a multiple of 32
    assert "24 output channels, not a multiple of 32" in int8.warnings[0].message
    assert not fp32.findings
    odd = preflight(_conv_model(tmp_path, 3, 13, "odd.onnx"), "fp16")
    assert any("13 output channels" in w.message for w in odd.warnings)  # what pruning to odd widths costs


def test_preflight_names_what_tensorrt_refuses(tmp_path):
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "scale")
    u8_zero = numpy_helper.from_array(np.array(128, np.uint8), "zp_u8")
    s8_zero = numpy_helper.from_array(np.array(3, np.int8), "zp_s8")
    w = numpy_helper.from_array(np.zeros((8, 8, 1, 1), np.uint8), "w_q")
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "scale", "zp_u8"], ["xq"], name="q_uint8"),
        helper.make_node(
            "QLinearConv",
            ["xq", "scale", "zp_u8", "w_q", "scale", "zp_u8", "scale", "zp_u8"],
            ["yq"],
            name="qlinearconv",
        ),
        helper.make_node("DequantizeLinear", ["yq", "scale", "zp_u8"], ["y"], name="dq"),
        helper.make_node("QuantizeLinear", ["y", "scale", "zp_s8"], ["y8"], name="q_asymmetric"),
        helper.make_node("DequantizeLinear", ["y8", "scale", "zp_s8"], ["y2"], name="dq2"),
        helper.make_node(
            "QLinearAdd",
            ["xq", "scale", "zp_u8", "xq", "scale", "zp_u8", "scale", "zp_u8"],
            ["sq"],
            name="contrib",
            domain="com.microsoft",
        ),
        helper.make_node("Cast", ["y2"], ["out"], name="to_double", to=TensorProto.DOUBLE),
    ]
    path = _graph_model(
        tmp_path,
        nodes,
        [scale, u8_zero, s8_zero, w],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 8, 4, 4])],
        [
            helper.make_tensor_value_info("out", TensorProto.DOUBLE, [1, 8, 4, 4]),
            helper.make_tensor_value_info("sq", TensorProto.UINT8, [1, 8, 4, 4]),
        ],
        "bad.onnx",
        opsets=(("", 17), ("com.microsoft", 1)),
    )
    report = preflight(path, "int8")
    kinds = {(f.kind, f.node) for f in report.errors}
    assert ("unsupported-op", "qlinearconv") in kinds and ("unsupported-op", "contrib") in kinds
    assert ("zero-point", "q_uint8") in kinds and ("zero-point", "q_asymmetric") in kinds
    assert ("dtype", "out") in kinds
    assert not report.ok and "TensorRT will refuse" in report.format()
    result = invoke_cli("check", str(path), "--precision", "int8")
    assert result.returncode == 1 and "QLinearConv" in result.stdout
    assert invoke_cli("check", str(_conv_model(tmp_path, 3, 32, "fine.onnx")), "--precision", "int8").returncode == 0


def test_preflight_of_a_corrupt_file_is_one_line(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07not a protobuf at all" * 3)
    with pytest.raises(PipelineError, match="not a readable ONNX file"):
        preflight(bad)
    with pytest.raises(PipelineError, match="not found"):
        preflight(tmp_path / "missing.onnx")


def _fake_trt(version: str):
    """Only the attributes build_flags reads: the policy under test is ours, not TensorRT's."""
    return types.SimpleNamespace(__version__=version, BuilderFlag=types.SimpleNamespace(FP16="FP16", INT8="INT8"))


def test_builder_flags_follow_the_tensorrt_major_version():
    """The Python builder's decision is the one trtexec's gets (tests/test_trtexec.py covers the table)."""
    assert tensorrt_loader.build_flags(_fake_trt("10.3.0"), "fp16", "fp32").builder_flags == ["FP16"]
    assert tensorrt_loader.build_flags(_fake_trt("10.3.0"), "int8", "int8").builder_flags == ["INT8", "FP16"]
    with pytest.raises(BenchError, match="needs an ONNX with Q/DQ"):
        tensorrt_loader.build_flags(_fake_trt("10.3.0"), "int8", "fp32")
    # TensorRT 11: strongly typed, no precision flags; asking for one the ONNX does not have is refused clearly
    eleven = tensorrt_loader.build_flags(_fake_trt("11.4.1"), "fp16", "fp16")
    assert eleven.strongly_typed and eleven.builder_flags == []
    with pytest.raises(BenchError, match="strongly typed networks only: it has no FP16 flag"):
        tensorrt_loader.build_flags(_fake_trt("11.0.0"), "fp16", "fp32")
    # a block-table variant on TensorRT 11 (x86-gpu, fp16) is timed as its ONNX is, and says so
    timed = tensorrt_loader.build_flags(_fake_trt("11.0.0"), "fp16", "fp32", measuring=True)
    assert timed.precision == "fp32" and "timed as fp32" in timed.note


def test_onnx_precision_is_read_from_the_file(lenet_onnx, tmp_path):
    from onnxruntime.transformers.float16 import convert_float_to_float16

    assert tensorrt_loader.onnx_precision(str(lenet_onnx)) == "fp32"
    half = tmp_path / "half.onnx"
    onnx.save(convert_float_to_float16(onnx.load(str(lenet_onnx)), keep_io_types=True), str(half))
    assert tensorrt_loader.onnx_precision(str(half)) == "fp16"


def test_trtexec_results_are_parsed(tmp_path):
    # the shapes trtexec writes: --exportTimes a list of per-iteration records, --exportProfile [{"count"}, layers...]
    times = [
        {
            "startInMs": 0.0,
            "endInMs": 0.0,
            "startComputeMs": 1.0 + i,
            "endComputeMs": 1.5 + i,
            "startOutMs": 0.0,
            "endOutMs": 0.0,
            "inMs": 0.0,
            "computeMs": 0.5 + 0.01 * i,
            "outMs": 0.0,
            "latencyMs": 0.6 + 0.01 * i,
            "endToEndMs": 0.6,
        }
        for i in range(5)
    ]
    (tmp_path / "times.json").write_text(json.dumps(times))
    assert trtexec_loader.parse_trtexec_times(str(tmp_path / "times.json")) == pytest.approx(
        [0.5, 0.51, 0.52, 0.53, 0.54]
    )
    profile = [
        {"count": 5},
        {"name": "conv1", "timeMs": 1.0, "averageMs": 0.2, "medianMs": 0.19, "percentage": 60.0},
        {"name": "fc", "timeMs": 0.5, "averageMs": 0.1, "medianMs": 0.1, "percentage": 40.0},
    ]
    (tmp_path / "profile.json").write_text(json.dumps(profile))
    layers = trtexec_loader.parse_trtexec_profile(str(tmp_path / "profile.json"))
    assert [layer["name"] for layer in layers] == ["conv1", "fc"] and layers[0]["median_ms"] == 0.19
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(BenchError, match="no iterations"):
        trtexec_loader.parse_trtexec_times(str(tmp_path / "empty.json"))


def test_engine_stamps_refuse_another_tensorrt_or_gpu():
    stamp = {
        "format": "edge-pipeline/engine-stamp-v1",
        "tensorrt_version": "10.3.0",
        "gpu_name": "Orin",
        "compute_capability": "8.7",
    }
    assert tensorrt_loader.stamp_mismatch(stamp, "10.3.0", {"gpu_name": "Orin", "compute_capability": "8.7"}) is None
    assert "built with TensorRT 10.3.0, this is TensorRT 10.8.0" in tensorrt_loader.stamp_mismatch(
        stamp, "10.8.0", {"compute_capability": "8.7"}
    )
    assert "compute 8.7" in tensorrt_loader.stamp_mismatch(
        stamp, "10.3.0", {"gpu_name": "H100", "compute_capability": "9.0"}
    )


@pytest.mark.skipif(tensorrt_available() is None, reason="TensorRT is installed: the engine is built, not described")
def test_engine_stage_without_tensorrt_leaves_the_device_command(lenet_onnx, tmp_path):
    """`pipeline engine --onnx lenet5.onnx --target jetson-agx-orin --precision fp16`, as the engine stage with the
    config the command resolves from the target file: its DLA core, GPU fallback and workspace reach trtexec."""
    target = load_target("jetson-agx-orin")
    target.check_precision("fp16")
    config = engine_config(target, "fp16", preprocess_from_onnx(lenet_onnx, None).input_shape)
    run = RunFolder(tmp_path / "e")
    metrics = run.run(EngineStage(lenet_onnx, config))["metrics"]
    assert metrics["built"] is False and "tensorrt" in metrics["reason"]
    script = run.artifact("engine", "script").read_text()
    assert metrics["command"] == "./build_on_device.sh"
    assert all(line in script for line in metrics["commands"].values() if not line.startswith("refused"))
    ten = metrics["commands"]["build_tensorrt_10"]
    for flag in ("--onnx=model.onnx", "--fp16", "--optShapes=input:1x1x28x28", "--memPoolSize=workspace:4096M"):
        assert flag in ten
    assert "--useDLACore=0" in ten and "--allowGPUFallback" in ten
    # TensorRT 11 (in this target's range) has no --fp16: an fp32 ONNX cannot become an fp16 engine there
    assert metrics["commands"]["build_tensorrt_11"].startswith("refused: ")
    assert "--shapes=input:1x1x28x28" in metrics["commands"]["time"]
    assert run.artifact("engine", "onnx").read_bytes() == lenet_onnx.read_bytes()
    assert json.loads(run.artifact("engine", "preflight").read_text())["ok"] is True
    instructions = run.artifact("engine", "instructions").read_text()
    assert "pipeline engine --target jetson-agx-orin --host" in instructions and "TensorRT 10.3 to 11" in instructions


def test_engine_command_errors(lenet_onnx, tmp_path):
    cpu = invoke_cli("engine", "--onnx", str(lenet_onnx), "--target", "cpu", "--out", str(tmp_path / "c"), "--quiet")
    assert cpu.returncode != 0 and "engines are for TensorRT targets" in cpu.stderr
    fp32 = invoke_cli(
        "engine",
        "--onnx",
        str(lenet_onnx),
        "--target",
        "jetson-agx-orin",
        "--precision",
        "fp32",
        "--out",
        str(tmp_path / "d"),
        "--quiet",
    )  # DLA runs fp16/int8 only
    assert fp32.returncode != 0 and "accepts precision fp16, int8, not fp32" in fp32.stderr


# ---- real TensorRT (a GPU machine with TensorRT 10/11) ------------------------------------------------------
@pytest.mark.tensorrt
@pytest.mark.skipif(tensorrt_available() is not None, reason=f"TensorRT cannot run here: {tensorrt_available()}")
def test_engine_stage_builds_a_stamped_engine_that_matches_onnxruntime(lenet_onnx, tmp_path):
    from pipeline.runtimes import OnnxRuntimeRunner, TensorRtRunner

    result = invoke_cli(
        "engine",
        "--onnx",
        str(lenet_onnx),
        "--target",
        "x86-gpu",
        "--precision",
        "fp32",
        "--out",
        str(tmp_path / "e"),
        "--json",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["built"] and report["stamp"]["compute_capability"]
    engine = tmp_path / "e" / "engine" / "model.engine"
    assert (tmp_path / "e" / "engine" / "timing.cache").is_file()
    batch = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    with TensorRtRunner(engine) as trt_runner, OnnxRuntimeRunner(lenet_onnx) as ort_runner:
        assert np.abs(trt_runner.infer(batch) - ort_runner.infer(batch)).max() <= 1e-3
    stamp_path = engine.with_name("model.engine.json")
    stamp = json.loads(stamp_path.read_text())
    stamp_path.write_text(json.dumps({**stamp, "tensorrt_version": "9.9.9"}))
    with pytest.raises(PipelineError, match="built with TensorRT 9.9.9"):
        TensorRtRunner(engine).activate()


@needs_fmnist
@pytest.mark.skipif(tensorrt_available() is None, reason="TensorRT is installed here: latency is not a proxy")
def test_a_jetson_build_on_a_laptop_completes_with_a_labelled_proxy(tmp_path):
    """`pipeline quantize --target jetson --precision fp16 --calib real --images fmnist-train --budget smoke`, stage
    by stage with the settings the command resolves; then `pipeline report`, `bundle` and `verify` on the run."""
    options = BuildOptions(
        recipe="quantize",
        target="jetson",
        precision="fp16",
        calib="real",
        images="fmnist-train",
        budget="smoke",
        out=tmp_path / "run",
    )
    ctx = prepare(options)  # the target file (an alias of the Orin Nano), the budget, the default teacher, --eval
    run, target, budget, teacher = ctx.run, ctx.target, ctx.budget, ctx.teacher
    assert stages_to_run(ctx.recipe, options, "bench", target) == ["export", "quantize", "engine", "bench"]
    wanted = handed_on_precision(ctx.recipe, options, target)
    # what run_build records before the first stage, read by report and bundle
    run.set_run_info(
        command="pipeline quantize --target jetson --precision fp16 --calib real --images fmnist-train --budget smoke",
        recipe=ctx.recipe.name,
        teacher=str(ctx.teacher_path),
        teacher_arch=teacher.arch,
        teacher_name=teacher.name,
        teacher_format=teacher.source_format,
        target=target.to_dict(),
        budget=budget.to_dict(),
        preprocess=teacher.preprocess.to_dict(),
        num_classes=teacher.num_classes,
        eval=ctx.eval,
    )
    run.run(ExportStage({"teacher": ctx.teacher_path}, ExportConfig(eval=ctx.eval, specs={"teacher": ctx.spec})))
    fp32 = run.artifact("export", "teacher")
    quantize = quantize_config(ctx.recipe, options, target, budget, ctx.eval, ctx.spec, wanted)
    run.run(QuantizeStage(fp32, ctx.teacher_path, None, quantize))
    fp16 = run.artifact("quantize", "model")
    run.run(EngineStage(fp16, engine_config(target, wanted, teacher.input_shape)))
    run.run(BenchStage({"teacher": fp32, "student": fp16}, bench_config(target, budget, teacher.preprocess, ctx.eval)))

    summary = summarize(run)
    stages = json.loads((run.root / "manifest.json").read_text())["stages"]
    assert all(
        e["latency_source"] == "proxy" and e["proxy_for"] == "tensorrt" for e in stages["bench"]["metrics"].values()
    )
    assert stages["engine"]["metrics"]["built"] is False
    notes = " ".join(summary["notes"])
    assert "latency figures are a proxy" in notes and "build_on_device.sh" in notes
    student = next(row for row in summary["rows"] if row["model"] == "student")
    assert student["precision"] == "fp16" and stages["quantize"]["metrics"]["calibration"] == "real"
    # the run's report and bundle carry the label too (pipeline report / bundle / verify on a real run folder)
    out = run.root
    report = invoke_cli("report", str(out))
    assert report.returncode == 0 and "latency source: proxy" in report.stdout
    assert (out / "report" / "summary.csv").read_text().count("\n") == 3 and (out / "report" / "pareto.png").is_file()
    bundle = invoke_cli("bundle", str(out), "--json")
    assert bundle.returncode == 0, bundle.stderr
    made = json.loads(bundle.stdout)
    assert made["models"] == ["models/teacher-fp16.onnx", "models/teacher-fp32.onnx"]
    card = (out / "bundle" / "run" / "MODEL_CARD.md").read_text()
    assert (
        "proxy: onnxruntime here for tensorrt" in card
        and 'which runs trtexec (TensorRT 10: `"$TRTEXEC" --onnx=model.onnx' in card
    )
    assert "T-shirt/top" in card  # Fashion-MNIST class labels
    assert invoke_cli("verify", made["archive"]).returncode == 0


@pytest.mark.skipif(trtexec_loader.trtexec_path() is not None, reason="trtexec is installed here")
def test_trtexec_runner_without_trtexec_names_where_it_lives(lenet_onnx):
    from pipeline.errors import MissingDependency
    from pipeline.runtimes import TrtexecRunner

    with pytest.raises(MissingDependency, match="trtexec not found.*/usr/src/tensorrt/bin"):
        TrtexecRunner(lenet_onnx)
