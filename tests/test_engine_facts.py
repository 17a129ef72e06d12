"""What an engine holds and where it runs (issue 23 items 5 and 9): the inspector's layer types read from both
majors' JSON, and the version- and hardware-compatibility options with the refusals that name them. The TensorRT
objects here are stand-ins that record what the builder code sets; building real engines is tests/test_gpu.py's
and the TensorRT-marked tests' work where a GPU exists."""

import json
import types

import pytest

from pipeline.errors import PipelineError
from pipeline.portable.engine_facts import apply_portability, portability_mismatch, summarize_inspector
from pipeline.portable.errors import BenchError
from pipeline.portable.formats import format_fields
from pipeline.portable.tensorrt_loader import STAMP_KIND, STAMP_VERSION, stamp_mismatch
from pipeline.targets import target_from_dict

TEN = {
    "Layers": [
        {
            "Name": "conv1",
            "Outputs": [{"Name": "a", "Format/DataType": "Channel major FP16 format where channel % 8 == 0"}],
        },
        {"Name": "conv2", "Outputs": [{"Name": "b", "Format/DataType": "Row major Int8 format"}]},
        {"Name": "fc", "Outputs": [{"Name": "logits", "Format/DataType": "Row major linear FP32"}]},
    ],
    "Bindings": ["input", "logits"],
}
ELEVEN = {
    "Layers": [{"Name": "conv1", "Outputs": [{"Name": "a", "DataType": "Half", "Format": "kHWC8"}]}],
    "I/O Tensors": [
        {"Name": "input", "IOMode": "Input", "DataType": "Half", "Dimensions": [1, 1, 28, 28]},
        {"Name": "logits", "IOMode": "Output", "DataType": "Float", "Dimensions": [1, 10]},
    ],
}


def test_the_inspector_says_what_the_network_computes_in_for_both_majors():
    ten = summarize_inspector(json.dumps(TEN))
    assert (
        ten["layer_precisions"] == {"fp16": 1, "int8": 1, "fp32": 1}
        and ten["network_precision"] in ten["layer_precisions"]
    )
    assert [t["name"] for t in ten["io_tensors"]] == ["input", "logits"]
    eleven = summarize_inspector(json.dumps(ELEVEN))
    assert eleven["network_precision"] == "fp16" and eleven["io_tensors"][0] == {
        "name": "input",
        "mode": "Input",
        "precision": "fp16",
    }
    names_only = summarize_inspector(json.dumps({"Layers": ["conv1", "fc"], "Bindings": ["x", "y"]}))
    assert names_only["network_precision"] is None  # no detailed verbosity: not claimed


def _config():
    calls = []
    config = types.SimpleNamespace(set_flag=lambda flag: calls.append(flag), hardware_compatibility_level=None)
    trt = types.SimpleNamespace(
        BuilderFlag=types.SimpleNamespace(VERSION_COMPATIBLE="VERSION_COMPATIBLE"),
        HardwareCompatibilityLevel=types.SimpleNamespace(AMPERE_PLUS="AMPERE_PLUS"),
    )
    return trt, config, calls


def test_portability_options_are_set_where_nvidia_supports_them():
    trt, config, calls = _config()
    record = apply_portability(trt, config, True, True, {"compute_capability": "8.6"}, None)
    assert record == {"version_compatible": True, "hardware_compatible": True}
    assert calls == ["VERSION_COMPATIBLE"] and config.hardware_compatibility_level == "AMPERE_PLUS"
    with pytest.raises(BenchError, match="Ampere or newer GPU .* not compute capability 7.5"):
        apply_portability(*_config()[:2], False, True, {"compute_capability": "7.5"}, None)
    with pytest.raises(BenchError, match="not a DLA engine"):
        apply_portability(*_config()[:2], False, True, {"compute_capability": "8.7"}, 0)
    base = {"name": "b", "description": "x", "runtime": "tensorrt", "device": "jetson"}
    with pytest.raises(PipelineError, match="hardware_compatible is for discrete"):
        target_from_dict({**base, "tensorrt": {"hardware_compatible": True}})


def test_a_refusal_names_the_option_that_would_have_made_the_engine_portable():
    stamp = {
        **format_fields(STAMP_KIND, STAMP_VERSION),
        "tensorrt_version": "10.3.0",
        "gpu_name": "Orin",
        "compute_capability": "8.7",
    }
    orin = {"gpu_name": "Orin", "compute_capability": "8.7"}
    assert "version_compatible = true" in stamp_mismatch(stamp, "10.8.0", orin)
    assert "hardware_compatible = true" in stamp_mismatch(
        stamp, "10.3.0", {"gpu_name": "A100", "compute_capability": "8.0"}
    )
    portable = {**stamp, "version_compatible": True, "hardware_compatible": True}
    assert portability_mismatch(portable, "10.8.0", orin) is None  # a later runtime loads it
    assert "loads on that version or later" in portability_mismatch(portable, "10.1.0", orin)
    assert portability_mismatch(portable, "10.3.0", {"gpu_name": "H100", "compute_capability": "9.0"}) is None
    trtexec_built = {**stamp, "gpu_name": None, "compute_capability": None}  # a banner version, no GPU named
    assert portability_mismatch(trtexec_built, "10.3.0.30", orin) is None
    assert "Ampere or newer" in portability_mismatch(
        portable, "10.3.0", {"gpu_name": "T4", "compute_capability": "7.5"}
    )
