"""trtexec by the book (issue 23 items 1-4): the device's own trtexec version decides the command, every command
line uses only options NVIDIA documents for that TensorRT major (tests/data/trtexec_options.json, with its
sources), an engine is built once and then timed with --loadEngine at the target's batch, and one function
decides each engine's precision everywhere. No TensorRT exists here: the trtexec these tests run is a stand-in
(tests/trtexec_standin.py) that checks the options it is given and writes the files a real run would; no test
reads its times as a latency."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.engine.stage import EngineConfig, device_commands, device_script
from pipeline.export import export_onnx
from pipeline.models import create_model
from pipeline.portable import device_bench, trtexec_loader
from pipeline.portable.engine_precision import engine_precision
from pipeline.portable.errors import BenchError
from pipeline.preprocess import default_preprocess
from pipeline.runtimes.trtexec_runner import TrtexecRunner

TESTS = Path(__file__).parent
OPTIONS = json.loads((TESTS / "data" / "trtexec_options.json").read_text())["options"]
VERSIONS = {8: 8501, 10: 100300, 11: 110401}


@pytest.fixture(scope="module")
def dynamic_onnx(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("trtexec") / "lenet5.onnx"
    model = create_model("lenet5", in_channels=1, num_classes=10).eval()
    export_onnx(model, default_preprocess(1, 28, 28), path, exporter="torchscript")
    return path


@pytest.fixture
def standin(tmp_path, monkeypatch):
    """`trtexec` on PATH is the stand-in; returns a function that sets its version and the command log."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "trtexec").symlink_to(TESTS / "trtexec_standin.py")
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    log = tmp_path / "trtexec.log"
    monkeypatch.setenv("TRTEXEC_STANDIN_LOG", str(log))
    monkeypatch.setattr(trtexec_loader, "_versions", {})

    def at(major: int, number: int | None = None) -> Path:  # `number`: the banner's, when not the major's usual
        monkeypatch.setenv("TRTEXEC_STANDIN_VERSION", str(number or VERSIONS[major]))
        trtexec_loader._versions.clear()
        return log

    return at


def _calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


def _valid_for(command: list[str], major: int) -> list[str]:
    """The options of `command` that trtexec of `major` does not document (empty: the line is valid there)."""
    return [part for part in command[1:] if part.partition("=")[0] not in OPTIONS[str(major)]]


def test_the_banner_gives_the_version_in_nvidias_encoding():
    assert trtexec_loader.parse_trtexec_banner("&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # x") == (10, 3, 0)
    assert trtexec_loader.parse_trtexec_banner("[TensorRT v110401]") == (11, 4, 1)
    assert trtexec_loader.parse_trtexec_banner("&&&& RUNNING TensorRT.trtexec [TensorRT v8501]") == (8, 5, 1)
    assert trtexec_loader.parse_trtexec_banner("usage: something else") is None


@pytest.mark.parametrize(
    "major, requested, stored, precision, flags",
    [
        (10, "fp32", "fp32", "fp32", []),
        (10, "fp16", "fp32", "fp16", ["FP16"]),  # weakly typed: the flag lets it choose fp16 kernels
        (10, "int8", "int8", "int8", ["INT8", "FP16"]),
        (10, "binary", "int8", "binary", ["INT8", "FP16"]),
        (11, "fp16", "fp16", "fp16", []),  # strongly typed: the ONNX holds the precision, no flag exists
        (11, "int8", "int8", "int8", []),
        (11, "binary", "int8", "binary", []),
    ],
)
def test_one_function_decides_the_engine_precision(major, requested, stored, precision, flags):
    decided = engine_precision(major, requested, stored)
    assert (decided.precision, decided.builder_flags, decided.strongly_typed) == (precision, flags, major >= 11)
    assert decided.note is None


def test_impossible_precisions_are_refused_and_a_measurement_says_what_it_timed():
    with pytest.raises(BenchError, match="needs an ONNX with Q/DQ"):
        engine_precision(10, "int8", "fp32")
    with pytest.raises(BenchError, match="strongly typed networks only: it has no FP16 flag, and this ONNX is fp32"):
        engine_precision(11, "fp16", "fp32")
    timed = engine_precision(11, "fp16", "fp32", measuring=True)  # a table variant on x86-gpu's TensorRT 11
    assert timed.precision == "fp32" and "timed as fp32, not fp16" in timed.note and timed.builder_flags == []
    unknown = engine_precision(11, "fp16", None, measuring=True)  # no onnx package: never stamped fp16 by assumption
    assert unknown.precision is None and "could not be read" in unknown.note
    with pytest.raises(BenchError, match="pip install onnx"):  # a deliverable engine is refused instead
        engine_precision(11, "fp16", None)
    with pytest.raises(BenchError, match="unknown engine precision"):
        engine_precision(10, "bf16", "fp32")


@pytest.mark.parametrize("major", [8, 10, 11])
def test_command_lines_use_only_the_options_that_major_documents(major):
    stored = "int8"  # an int8 Q/DQ ONNX: valid on every major
    decided = engine_precision(major, "int8", stored)
    build = trtexec_loader.trtexec_build_command(
        "m.onnx",
        "m.engine",
        tensorrt_major=major,
        precision=decided,
        input_name="input",
        input_shape=(3, 224, 224),
        batch=4,
        max_batch=16,
        timing_cache="t.cache",
        workspace_mb=512,
        dla_core=0,
    )
    timing = trtexec_loader.trtexec_time_command(
        "m.engine",
        input_name="input",
        input_shape=(3, 224, 224),
        batch=4,
        runs=100,
        warmup_ms=500,
        times_path="t.json",
        profile_path="p.json",
        dla_core=0,
    )
    assert _valid_for(build, major) == [] and _valid_for(timing, major) == []
    assert "--minShapes=input:1x3x224x224" in build and "--optShapes=input:4x3x224x224" in build
    assert "--maxShapes=input:16x3x224x224" in build and "--shapes=input:4x3x224x224" in timing
    assert "--loadEngine=m.engine" in timing and not any(part.startswith("--onnx") for part in timing)
    assert ("--int8" in build) == (major < 11) and "--stronglyTyped" not in build
    assert ("--skipInference" in build) == (major >= 10)
    # the 10.x line would fail on 11: exactly its precision flags are what 11 removed
    if major == 10:
        assert _valid_for(build, 11) == ["--int8", "--fp16"]


def test_the_runner_builds_once_and_times_the_same_engine_at_the_targets_batch(standin, dynamic_onnx):
    log = standin(11)
    example = np.zeros((4, 1, 28, 28), dtype=np.float32)
    with TrtexecRunner(dynamic_onnx, precision="fp16", input_name="input") as runner:
        for _ in range(3):
            assert len(runner.timed_runs(example, warmup=10, runs=7)) == 7
        described = runner.describe()
    calls = _calls(log)
    builds = [call for call in calls if any(part.startswith("--onnx=") for part in call)]
    timings = [call for call in calls if any(part.startswith("--loadEngine=") for part in call)]
    assert len(builds) == 1 and len(timings) == 3 and calls[0] == ["--help"]  # the version, read once
    assert all("--shapes=input:4x1x28x28" in call for call in timings)
    assert "--fp16" not in builds[0] and described["version"] == "11.4.1"
    # TensorRT 11 cannot make an fp32 ONNX fp16: the timing says what it timed
    assert "timed as fp32, not fp16" in described["precision_note"]


def test_the_device_script_reads_its_trtexec_version(standin, dynamic_onnx, tmp_path):
    """trtexec fallback on the device: build once per model with the flags of the device's own version (none was
    read before: the major was None without a Python tensorrt, and 10.x flags went to 11), then time it."""
    log = standin(11)
    workdir = tmp_path / "device"
    workdir.mkdir()
    (workdir / "m.onnx").write_bytes(dynamic_onnx.read_bytes())
    spec = {
        "models": {"m": "m.onnx"},
        "runtime": "trtexec",
        "batch": 2,
        "input_shape": [1, 28, 28],
        "input_names": {"m": "input"},
        "warmup": 5,
        "runs": 6,
        "rounds": 3,
        "build": {"precision": "fp32"},
    }
    result = device_bench.run_spec(spec, str(workdir))
    stamp = result["engines"]["m"]
    assert stamp["built_by"] == "trtexec" and stamp["tensorrt_version"] == "11.4.1" and stamp["precision"] == "fp32"
    assert stamp["inspected"] and stamp["network_precision"] == "fp32"  # read back from --exportLayerInfo
    assert (
        stamp["engine_sha256"]
        and "--loadEngine=" in stamp["command"]
        and "--shapes=input:2x1x28x28" in stamp["command"]
    )
    calls = _calls(log)
    assert sum(any(p.startswith("--onnx=") for p in call) for call in calls) == 1  # one build, three timed rounds
    assert sum(any(p.startswith("--loadEngine=") for p in call) for call in calls) == 3
    assert all(_valid_for(["trtexec", *call], 11) == [] for call in calls if call != ["--help"])
    assert result["device"]["trtexec_version"] == "11.4.1"
    with pytest.raises(BenchError, match="strongly typed"):  # a deliverable engine is never another precision
        device_bench.run_spec({**spec, "build": {"precision": "fp16", "deliverable": True}}, str(workdir))


def test_the_on_device_script_picks_the_build_by_the_devices_version(standin, dynamic_onnx, tmp_path):
    """jetson-agx-orin allows TensorRT 10.3 to 11: an fp16 engine from an fp32 ONNX is a flag on 10 and impossible on
    11, so the script builds on a 10.x device and stops with one line on an 11.x one."""
    config = EngineConfig(
        target="jetson-agx-orin",
        precision="fp16",
        batch=1,
        input_shape=(1, 28, 28),
        max_batch=16,
        workspace_mb=4096,
        tensorrt_min="10.3",
        tensorrt_max="11",
    )
    commands = device_commands(dynamic_onnx, config)
    assert set(commands) == {"build_tensorrt_10", "build_tensorrt_11", "time"}
    assert "--fp16" in commands["build_tensorrt_10"] and commands["build_tensorrt_11"].startswith("refused: ")
    folder = tmp_path / "engine"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(dynamic_onnx.read_bytes())
    script = folder / "build_on_device.sh"
    script.write_text(device_script(commands, config))
    trtexec = str(TESTS / "trtexec_standin.py")
    log = standin(10)
    done = subprocess.run(["sh", str(script)], capture_output=True, text=True, env={**os.environ, "TRTEXEC": trtexec})
    assert done.returncode == 0, done.stdout + done.stderr
    assert (folder / "model.engine").is_file() and (folder / "times.json").is_file()
    calls = _calls(log)
    assert "--fp16" in calls[1] and any(p.startswith("--loadEngine=") for p in calls[2])
    standin(11)
    (folder / "model.engine").unlink()
    done = subprocess.run(["sh", str(script)], capture_output=True, text=True, env={**os.environ, "TRTEXEC": trtexec})
    assert done.returncode == 1 and "strongly typed" in done.stderr and not (folder / "model.engine").exists()
    standin(10, 100100)  # a 10.1 device: the right major, below this target's 10.3
    done = subprocess.run(["sh", str(script)], capture_output=True, text=True, env={**os.environ, "TRTEXEC": trtexec})
    assert done.returncode == 1 and "this device has TensorRT v100100" in done.stderr
    standin(8)  # Xavier's TensorRT 8.5 is outside this target's range
    done = subprocess.run(["sh", str(script)], capture_output=True, text=True, env={**os.environ, "TRTEXEC": trtexec})
    assert done.returncode == 1 and "wants TensorRT 10.3 to 11" in done.stderr
