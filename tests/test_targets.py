import pytest

from pipeline.errors import PipelineError
from pipeline.targets import available_targets, load_target, target_from_dict


@pytest.mark.parametrize("name", available_targets())
def test_every_target_file_loads(name):
    target = load_target(name)
    assert target.name == name
    assert target.batch >= 1


def test_cpu_target_is_onnxruntime():
    target = load_target("cpu")
    assert (target.runtime, target.device, target.precision) == ("onnxruntime", "cpu", "fp32")


def test_unknown_keys_are_errors():
    with pytest.raises(PipelineError, match="unknown keys.*batchsize"):
        target_from_dict({"name": "x", "description": "x", "runtime": "onnxruntime", "device": "cpu", "batchsize": 4})
    with pytest.raises(PipelineError, match="tensorrt.min"):
        target_from_dict({"name": "x", "description": "x", "runtime": "tensorrt", "device": "cuda",
                          "tensorrt": {"min": "10.0"}})


def test_bad_values_are_errors(tmp_path):
    with pytest.raises(PipelineError, match="runtime must be"):
        target_from_dict({"name": "x", "description": "x", "runtime": "tflite", "device": "cpu"})
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(PipelineError, match="not valid TOML"):
        load_target(str(bad))
    with pytest.raises(PipelineError, match="unknown target 'nope'"):
        load_target("nope")


def test_target_from_a_path(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text('name = "edge"\ndescription = "d"\nruntime = "tensorrt"\ndevice = "jetson"\nbatch = 4\n'
                    'input_size = [32, 32]\n[tensorrt]\nmin_version = "10.3"\nmax_version = "10.99"\n')
    target = load_target(str(path))
    assert target.batch == 4 and target.input_size == (32, 32) and target.tensorrt_min == "10.3"
