"""`pipeline doctor` (issue 23): what is installed here and on the device, what each stage will use, and what is
missing, on this machine (no GPU, no TensorRT) and on the loopback SSH "device" (onnxruntime only)."""

import json

from conftest import invoke_cli

from pipeline.doctor import device_runtime, diagnose
from pipeline.targets import load_target, target_from_dict


def test_doctor_here_says_a_tensorrt_target_is_measured_by_proxy_and_what_is_missing():
    result = invoke_cli("doctor", "--target", "jetson-agx-orin", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    here = report["here"]
    assert (
        here["torch_version"]
        and here["onnxruntime_version"]
        and "CPUExecutionProvider" in here["onnxruntime_providers"]
    )
    assert here["tensorrt_version"] is None and here["cuda_available"] is False and report["device"] is None
    assert (
        report["uses"]["latency"].startswith("proxy: onnxruntime") and "build_on_device.sh" in report["uses"]["engine"]
    )
    assert any(line.startswith("TensorRT here: tensorrt is not installed") for line in report["missing"])
    screen = invoke_cli("doctor", "--target", "cpu")
    assert screen.returncode == 0 and "nothing missing for this target" in screen.stdout
    assert "onnxruntime" in screen.stdout and "TensorRT (Python)" in screen.stdout


def test_doctor_probes_the_device_over_ssh(loopback_device, tmp_path):
    target = tmp_path / "loopback.toml"
    target.write_text(loopback_device.target_toml())
    result = invoke_cli("doctor", "--target", str(target), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    device = report["device"]
    assert device["hostname"] and device["onnxruntime_version"] and device["tensorrt_version"] is None
    assert report["uses"]["latency"].startswith("onnxruntime") and loopback_device.host in report["uses"]["latency"]
    assert any("neither TensorRT's Python API nor trtexec" in line for line in report["missing"])
    unreachable = invoke_cli("doctor", "--target", "jetson", "--host", "nobody@127.0.0.1:1")
    assert unreachable.returncode != 0 and unreachable.stderr.startswith("error: doctor: cannot probe")


def test_the_diagnosis_follows_the_facts():
    """What the device script would use, in its order, and the target's TensorRT releases checked against it."""
    assert device_runtime({"tensorrt_version": "10.3.0", "trtexec": "/usr/bin/trtexec"}) == "tensorrt"
    assert device_runtime({"tensorrt_version": "8.5.2", "trtexec": "/usr/src/tensorrt/bin/trtexec"}) == "trtexec"
    assert device_runtime({"onnxruntime_version": "1.20"}) == "onnxruntime" and device_runtime({}) is None
    no_buffers = {"tensorrt_version": "10.3.0", "cuda_buffers": [], "trtexec": "/usr/src/tensorrt/bin/trtexec"}
    assert device_runtime(no_buffers) == "trtexec"  # JetPack's TensorRT without pycuda or cuda-python
    agx = load_target("jetson-agx-orin").with_host("me@orin")
    here = {"onnxruntime_version": "1.32.0", "cpu_count": 2}
    old = diagnose(agx, here, {"tensorrt_version": "11.2.0", "trtexec": "/usr/bin/trtexec"})
    assert any("has TensorRT 11.2.0; jetson-agx-orin wants" in line for line in old["missing"])
    assert diagnose(agx, here, {"tensorrt_version": "10.3.0"})["missing"] == []
    base = {"name": "board", "description": "x", "runtime": "tensorrt", "device": "jetson"}
    no_dla = target_from_dict(
        {**base, "tensorrt": {"dla_core": 0, "releases": [{"jetpack": "6.1", "tensorrt": "10.3", "dla": False}]}}
    )
    assert any("none of its releases in range runs DLA" in line for line in diagnose(no_dla, here, None)["missing"])
