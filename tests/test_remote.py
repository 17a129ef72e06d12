"""The remote harness against a real sshd on 127.0.0.1 (tests/loopback.py): copy, run, bring back, clean up."""

import json

import pytest
import torch
from conftest import invoke_cli, needs_fmnist

from pipeline.bench.stage import BenchStage
from pipeline.budgets import get_budget
from pipeline.errors import PipelineError
from pipeline.export import export_onnx
from pipeline.models import create_model
from pipeline.preprocess import default_preprocess, preprocess_from_onnx
from pipeline.recipes.stage_specs import bench_config
from pipeline.remote.harness import remote_run
from pipeline.remote.ssh import SshHost
from pipeline.stage import RunFolder
from pipeline.targets import load_target


@pytest.fixture(scope="module")
def lenet_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("lenet5", in_channels=1, num_classes=10).eval()
    path = tmp_path_factory.mktemp("remote-onnx") / "lenet5.onnx"
    export_onnx(model, default_preprocess(1, 28, 28), path, exporter="torchscript")
    return path


def _host(device, **changes) -> SshHost:
    return SshHost(
        device.host,
        port=changes.get("port", device.port),
        identity=str(device.identity),
        options=tuple(device.ssh_options()),
    )


def test_remote_run_times_models_on_the_device_and_cleans_up(loopback_device, lenet_onnx):
    host = _host(loopback_device)
    spec = {
        "runtime": "tensorrt",
        "fallback": ["trtexec", "onnxruntime"],
        "input_shape": [1, 28, 28],
        "threads": 1,
        "warmup": 3,
        "runs": 20,
        "rounds": 2,
        "max_seconds": 0.5,
    }
    result = remote_run(host, {"a": lenet_onnx, "b": lenet_onnx}, spec, python=loopback_device.python)
    # no TensorRT on this "device": the same script fell back to onnxruntime and said so
    assert result["runtime_used"] == "onnxruntime" and "measured with onnxruntime" in result["warnings"][0]
    for name in ("a", "b"):
        entry = result["models"][name]
        assert len(entry["round_medians_ms"]) == 2 and entry["median_ms"] > 0 and entry["pooled"]["runs"] >= 20
    facts = result["device"]
    assert {
        "hostname",
        "nvpmodel_mode" if "nvpmodel_mode" in facts else "cpu",
        "temperatures_c",
        "tensorrt_version",
    } <= set(facts)
    leftovers = host.run("ls -d /tmp/edge-pipeline-bench.* 2>/dev/null | wc -l").stdout.strip()
    assert leftovers == "0"


def test_a_remote_measurement_follows_the_rounds_policy_on_the_device(loopback_device, lenet_onnx):
    """The gate's extra rounds over SSH: the device script makes the policy's minimum, then asks the same
    question the package would (`SlowdownQuestion`), all in one session: a settled question stops at the
    minimum, an unanswerable one goes on to the maximum."""
    from pipeline.measure import LatencySettings, RoundsPolicy, SlowdownQuestion, time_onnx_models

    settings = LatencySettings(
        runtime="onnxruntime",
        threads=1,
        warmup=2,
        runs=5,
        max_seconds=0.2,
        source="remote",
        host=loopback_device.host,
        remote={
            "port": loopback_device.port,
            "python": loopback_device.python,
            "identity": str(loopback_device.identity),
            "ssh_options": loopback_device.ssh_options(),
        },
    )
    example = torch.zeros(1, 1, 28, 28).numpy()
    models = {"baseline": lenet_onnx, "candidate": lenet_onnx}
    policy = RoundsPolicy(6, 14)
    settled = SlowdownQuestion("candidate", "baseline", max_ratio=100.0, min_rounds=2)  # A/A: far below 100x
    never = SlowdownQuestion("candidate", "baseline", max_ratio=1.05, min_rounds=1000)  # needs 1000 rounds
    for question, rounds in ((settled, 6), (never, 14)):
        timed = time_onnx_models(models, settings, example, policy, "remote policy", enough=question)
        for entry in timed.values():
            assert entry["rounds"] == len(entry["round_medians_ms"]) == rounds
            assert entry["measured_on"]["source"] == "remote"


def test_ssh_failures_are_one_line_errors(loopback_device, lenet_onnx):
    closed = SshHost(
        loopback_device.host,
        port=1,
        identity=str(loopback_device.identity),
        options=tuple(loopback_device.ssh_options()),
        connect_timeout=3,
    )
    with pytest.raises(PipelineError, match=r"ssh on .*127\.0\.0\.1:1 failed: .*refused") as error:
        closed.run("true")
    assert "\n" not in str(error.value)
    host = _host(loopback_device)
    with pytest.raises(PipelineError, match="bench on .* failed: none of tensorrt is installed"):  # no fallback given
        remote_run(
            host, {"a": lenet_onnx}, {"runtime": "tensorrt", "input_shape": [1, 28, 28]}, python=loopback_device.python
        )


@needs_fmnist
def test_pipeline_bench_with_host_measures_on_the_device(loopback_device, lenet_onnx, tmp_path):
    """`pipeline bench --teacher lenet5.onnx --target loopback.toml --budget smoke`: the bench stage configured from a
    target file with a host as the command does (recipes/single_model.py::run_bench_only), timed on the device."""
    target_file = tmp_path / "loopback.toml"
    target_file.write_text(loopback_device.target_toml())
    target = load_target(str(target_file))
    config = bench_config(target, get_budget("smoke"), preprocess_from_onnx(lenet_onnx, None), None)
    assert (config.latency.source, config.latency.host) == ("remote", loopback_device.host)  # the file's host
    report = RunFolder(tmp_path / "bench").run(BenchStage({"model": lenet_onnx}, config))["metrics"]["model"]
    assert report["latency_source"] == "remote"
    assert report["measured_on"]["host"] == loopback_device.host and report["measured_on"]["runtime"] == "onnxruntime"
    assert (
        report["latency"]["median_ms"] > 0 and report["runtime"]["runtime"] == "onnxruntime"
    )  # accuracy: computed here
    latency = report["latency"]  # the measurement layer's record, filled from the device's answer
    assert (latency["where"], latency["runtime_used"], latency["includes_transfers"]) == ("remote", "onnxruntime", True)
    assert latency["host"] and latency["runtime_version"] and latency["rounds"] == len(latency["round_medians_ms"])


def test_an_unreachable_host_fails_the_command_in_one_line(tmp_path, lenet_onnx):
    result = invoke_cli(
        "bench",
        "--teacher",
        str(lenet_onnx),
        "--target",
        "jetson-orin-nano",
        "--host",
        "nobody@127.0.0.1:1",
        "--budget",
        "smoke",
        "--out",
        str(tmp_path / "b"),
        "--quiet",
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nobody@127.0.0.1:1" in lines[0]


@needs_fmnist
def test_drop_for_a_jetson_measures_the_block_table_on_the_device(loopback_device, tmp_path):
    """`pipeline build --target jetson-orin-nano --host ...` in miniature (`pipeline drop`, few-shot, so no
    synthesis): the Orin Nano profile (its 30 % budget) with the loopback sshd as the device. Block latencies, the
    drop check and the bench come from the device; the engine step finds no TensorRT there and leaves the command."""
    target = tmp_path / "jetson-loopback.toml"
    target.write_text(loopback_device.target_toml(bench={"warmup": 2, "runs": 10}))  # test-sized timing loops
    out = tmp_path / "run"
    teacher = tmp_path / "resnet8.pt"  # random weights: 3 blocks keep the test short; accuracy is not the point here
    torch.manual_seed(0)
    torch.save(create_model("resnet8").state_dict(), teacher)
    result = invoke_cli(
        "drop",
        "--teacher",
        str(teacher),
        "--arch",
        "resnet8",
        "--target",
        str(target),
        "--budget",
        "smoke",
        "--images",
        "fmnist-train",
        "--per-class",
        "5",
        "--out",
        str(out),
        "--json",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    manifest = json.loads((out / "manifest.json").read_text())["stages"]
    table = json.loads((out / "drop" / "latency_table.json").read_text())
    assert table["latency_source"] == "remote" and table["measured_on"]["host"] == loopback_device.host
    assert table["measured_on"]["runtime"] == "onnxruntime"  # what the "device" had; TensorRT was asked for
    assert table["runtime"] == "tensorrt" and table["runtime_used"] == "onnxruntime"  # a cache serves only that
    drop = manifest["drop"]["metrics"]
    assert drop["latency_source"] == "remote" and drop["dropped_blocks"]
    # few-shot: 5 real images per class recover the model, no transfer set is synthesised, and they calibrate too
    assert list(manifest) == ["drop", "export", "quantize", "engine", "bench"]
    assert drop["real_images"] == 50 and drop["data"].startswith("real")
    assert manifest["quantize"]["metrics"]["calibration"] == "real"
    engine = manifest["engine"]["metrics"]
    assert engine["built"] is False and loopback_device.host in engine["reason"]
    assert (out / "engine" / "build_on_device.sh").is_file()
    assert all(entry["latency_source"] == "remote" for entry in manifest["bench"]["metrics"].values())
    assert summary["latency_source"] == "remote" and any("latency measured on" in n for n in summary["notes"])
    assert any(n.startswith("fallback: tensorrt was asked for") for n in summary["notes"])  # said in words
    bench = next(iter(manifest["bench"]["metrics"].values()))
    assert bench["runtime"]["runtime"] == "onnxruntime" and bench["runtime"]["runtime_requested"] == "tensorrt"
