import pytest

from pipeline.errors import PipelineError
from pipeline.targets import available_targets, load_target, target_from_dict
from pipeline.versions import version_in_range

BASE = {"name": "x", "description": "x", "runtime": "tensorrt", "device": "jetson"}
REQUIRED_TARGETS = {"cpu", "x86-gpu", "jetson-orin-nano", "jetson-agx-orin", "jetson-xavier-nx", "jetson"}


def test_the_issue_targets_exist():
    assert REQUIRED_TARGETS <= set(available_targets())


@pytest.mark.parametrize("name", available_targets())
def test_every_target_file_loads(name):
    target = load_target(name)
    assert target.name == name or name == "jetson"
    assert target.batch >= 1
    assert target.precision in target.allowed_precisions


def test_jetson_is_the_orin_nano():
    assert load_target("jetson") == load_target("jetson-orin-nano")


def test_gpu_targets_say_what_the_engine_needs():
    nano, agx, xavier, gpu = (
        load_target(n) for n in ("jetson-orin-nano", "jetson-agx-orin", "jetson-xavier-nx", "x86-gpu")
    )
    assert all(t.runtime == "tensorrt" for t in (nano, agx, xavier, gpu))
    assert nano.tensorrt.dla_core is None and agx.tensorrt.dla_core == 0 and agx.tensorrt.gpu_fallback  # Nano: no DLA
    assert nano.accepts_tensorrt("10.3.0") and not nano.accepts_tensorrt("11.0.0")  # JetPack 6 -> TensorRT 10.x
    assert agx.accepts_tensorrt("11.4.1")  # JetPack 7 -> TensorRT 11
    assert not xavier.accepts_tensorrt("10.3.0")  # JetPack 5 tops out at TensorRT 8.5
    assert nano.power_mode and nano.tensorrt.workspace_mb and nano.latency_reduction == 0.3
    assert not nano.is_remote and nano.with_host("me@jetson.local").is_remote


def test_cpu_target_is_onnxruntime():
    target = load_target("cpu")
    assert (target.runtime, target.device, target.precision) == ("onnxruntime", "cpu", "fp32")
    assert not target.is_remote  # host = "localhost"


def test_unknown_keys_are_errors():
    with pytest.raises(PipelineError, match="unknown keys.*batchsize"):
        target_from_dict({**BASE, "batchsize": 4})
    with pytest.raises(PipelineError, match="tensorrt.min"):
        target_from_dict({**BASE, "tensorrt": {"min": "10.0"}})
    with pytest.raises(PipelineError, match="remote.pyhton"):
        target_from_dict({**BASE, "remote": {"pyhton": "python3"}})


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"runtime": "tflite"}, "runtime must be one of"),
        ({"batch": "4"}, "batch must be a positive integer"),
        ({"batch": True}, "batch must be a positive integer"),
        ({"input_size": [224]}, r"input_size must be \[height, width\]"),
        ({"latency_reduction": 1.5}, "latency_reduction must be a fraction"),
        ({"precisions": ["fp32", "int4"]}, "precisions must be"),
        ({"precision": "int8", "precisions": ["fp16"]}, "precision int8 is not in precisions"),
        ({"batch": 8, "max_batch": 4}, "max_batch .* is below batch"),
        ({"latency_budget_ms": 2.0, "latency_reduction": 0.3}, "not both"),
        ({"tensorrt": {"min_version": 10}}, "tensorrt.min_version must be a version"),
        ({"tensorrt": {"dla_core": -1}}, "dla_core must be a DLA core index"),
        ({"tensorrt": {"gpu_fallback": "yes"}}, "gpu_fallback must be true or false"),
        ({"tensorrt": {"min_version": "11.0", "max_version": "10"}}, "is above max_version"),
        ({"device": "cuda", "tensorrt": {"dla_core": 0}}, "dla_core is only for Jetson"),
        ({"runtime": "onnxruntime", "device": "cpu", "tensorrt": {"workspace_mb": 512}}, r"\[tensorrt\] settings need"),
        ({"remote": {"ssh_options": ["NoEquals"]}}, "ssh_options must be"),
        ({"tensorrt": 3}, r"\[tensorrt\] must be a table"),
    ],
)
def test_wrong_types_and_values_are_errors(extra, message):
    with pytest.raises(PipelineError, match=message):
        target_from_dict({**BASE, **extra})


def test_bad_files_are_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(PipelineError, match="not valid TOML"):
        load_target(str(bad))
    with pytest.raises(PipelineError, match="unknown target 'nope'"):
        load_target("nope")
    loop = tmp_path / "loop.toml"
    loop.write_text(f'alias = "{loop}"\n')
    with pytest.raises(PipelineError, match="no loops"):
        load_target(str(loop))
    extra = tmp_path / "extra.toml"
    extra.write_text('alias = "cpu"\nbatch = 2\n')
    with pytest.raises(PipelineError, match="alias file holds only"):
        load_target(str(extra))


def test_target_from_a_path(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text(
        'name = "edge"\ndescription = "d"\nruntime = "tensorrt"\ndevice = "jetson"\nbatch = 4\n'
        'input_size = [32, 32]\nhost = "me@edge"\n[tensorrt]\nmin_version = "10.3"\nmax_version = "10"\n'
        '[remote]\nport = 2222\nssh_options = ["UserKnownHostsFile=/dev/null"]\n'
    )
    target = load_target(str(path))
    assert target.batch == 4 and target.input_size == (32, 32) and target.tensorrt.min_version == "10.3"
    assert target.is_remote and target.remote.port == 2222
    assert target.remote.ssh_options == ("UserKnownHostsFile=/dev/null",)


def test_version_ranges():
    assert version_in_range("10.14.1", "10.3", "10") and not version_in_range("10.2", "10.3", "10")
    assert version_in_range("11.4.1", "10.0", "11.4") and not version_in_range("11.5.0", "10.0", "11.4")
    assert version_in_range("8.5.2", None, None)


def test_jetpack_tensorrt_and_dla_facts_follow_nvidias_documentation():
    """Issue 23 item 6: DLA is absent in TensorRT 11.0-11.3 and after 10.7, back on AGX Orin with 11.4.1 on JetPack
    7.2.2+; JetPack 6 stays on 10.x; no other 11.x supports JetPack (pipeline/jetson_releases.py names the pages)."""
    from pipeline.jetson_releases import release_problem

    assert release_problem("jetson-agx-orin", "6.1", "10.3", dla=True) is None
    assert release_problem("jetson-agx-orin", "7.2.2", "11.4.1", dla=True) is None
    assert "stays on TensorRT 10.x" in release_problem("jetson-agx-orin", "6.1", "11.4.1", dla=True)
    assert "supports no JetPack" in release_problem("jetson-agx-orin", "7.2.2", "11.2.0", dla=False)
    assert "needs JetPack 7.2.2" in release_problem("jetson-agx-orin", "7.0", "11.4.1", dla=False)
    assert "10.7 was the last" in release_problem("jetson-agx-orin", "6.2", "10.8", dla=True)
    agx = load_target("jetson-agx-orin")  # the file lists what the board runs; 11.2 is in its range, not a release
    assert agx.accepts_tensorrt("11.4.1") and agx.accepts_tensorrt("10.3.0") and not agx.accepts_tensorrt("11.2.0")
    impossible = {**BASE, "tensorrt": {"releases": [{"jetpack": "6.1", "tensorrt": "11.4.1", "dla": True}]}}
    with pytest.raises(PipelineError, match="JetPack 6.1 stays on TensorRT 10.x"):
        target_from_dict(impossible)
    with pytest.raises(PipelineError, match="releases must be a list"):
        target_from_dict({**BASE, "tensorrt": {"releases": [{"jetpack": "6.1"}]}})


def test_the_engine_stage_refuses_a_dla_build_no_release_runs_before_any_build(tmp_path):
    from pipeline.engine.stage import EngineConfig, EngineStage
    from pipeline.stage import RunFolder

    releases = ({"jetpack": "6.2", "tensorrt": "10.8", "dla": False},)
    config = EngineConfig("board", "fp16", 1, (1, 28, 28), dla_core=0, tensorrt_min="10.8", releases=releases)
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"never read: the refusal comes first")
    with pytest.raises(PipelineError, match="asks for DLA core 0, but none of its releases in range runs DLA"):
        RunFolder(tmp_path / "run").run(EngineStage(onnx, config))
