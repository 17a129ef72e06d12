"""Data-free training through the real CLI: every synthesizer end to end, torchrun data parallel, big teachers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.data.transfer_set import TransferSet
from pipeline.models.load import load_model
from tests.conftest import ROOT, invoke_cli, needs_fmnist

pytestmark = pytest.mark.slow


def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


@needs_fmnist
@pytest.mark.parametrize(
    "method, extra",
    # every synthesizer runs through distill in tests/test_stages.py; these two check the CLI's option wiring
    [
        ("dafl", ["--synth-preset", "paper", "--synth-option", "batch_size=32"]),
        (
            "bn-inversion",
            ["--mix-images", "fmnist-train", "--mix-per-class", "3", "--ema", "0.99", "--feature-weight", "1"],
        ),
    ],
)
def test_distill_command_passes_the_synthesizer_options_through(method, extra, tmp_path):
    run = tmp_path / "run"
    result = invoke_cli(
        "distill",
        "--teacher",
        "embedded:lenet5-fmnist",
        "--budget",
        "smoke",
        "--steps",
        "12",
        "--out",
        str(run),
        "--synthesizer",
        method,
        *extra,
        "--eval",
        "fmnist",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    stages = _manifest(run)["stages"]
    assert stages["synthesize"]["metrics"]["method"] == method
    distill = stages["distill"]["metrics"]
    assert distill["method"] == method and distill["student_steps"] > 0
    assert distill["transfer_set"]["images"] > 0
    assert distill["cost"]["seconds_per_iteration"] > 0 and distill["cost"]["peak_host_memory_mb"] > 0
    if method == "images" or "--mix-images" in extra:
        assert distill["transfer_set"]["real_images"] > 0
    else:
        assert distill["transfer_set"]["real_images"] == 0
    pool = TransferSet.load(run / "distill" / "transfer_set.pt")
    assert pool.pixels.dtype == torch.uint8 and len(pool) == distill["transfer_set"]["images"]
    student = load_model(run / "distill" / "student.pt")
    assert student.arch == "lenet5-half"
    assert distill["accuracy_curve"][-1]["final"] and 0 <= distill["accuracy_curve"][-1]["accuracy"] <= 1


def test_bad_synthesizer_choices_fail_in_one_line(tmp_path):
    for args, message in (
        (["--synthesizer", "gan"], "unknown synthesizer 'gan'"),
        (["--synth-option", "colour=red"], "has no option 'colour'"),
        (["--synth-option", "novalue"], "expects KEY=VALUE"),
        (["--synthesizer", "images"], "needs a folder"),
    ):
        result = invoke_cli("synthesize", "--budget", "smoke", "--out", str(tmp_path / "r"), *args)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("error:") and message in lines[-1], result.stderr


def test_two_process_torchrun_distill_trains_and_ranks_agree(tmp_path):
    """torchrun --nproc-per-node 2 with gloo on the CPU: DDP keeps both ranks' students identical."""
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29517",
        "-m",
        "pipeline.cli",
        "distill",
        "--teacher",
        "embedded:lenet5-fmnist",
        "--budget",
        "smoke",
        "--out",
        str(run),
        "--device",
        "cpu",
        "--eval",
        "none",
        "--quiet",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    stages = _manifest(run)["stages"]
    assert stages["synthesize"]["metrics"]["world_size"] == 2
    distill = stages["distill"]["metrics"]
    assert distill["world_size"] == 2 and len(distill["rank_parameter_checksums"]) == 2
    assert distill["ranks_agree"], distill["rank_parameter_checksums"]
    assert distill["student_steps"] > 0 and distill["final_kd_loss"] < distill["first_kd_loss"]
    assert not list(run.glob(".partial-*")) and not list(run.glob("*/rank-*"))
    load_model(run / "distill" / "student.pt")


def test_imagenet_shaped_resnet34_teacher_goes_through_the_same_path(tmp_path):
    """torchvision resnet34, 3x224x224, 1000 classes, plain state_dict: synthesize + distill at the smoke budget."""
    import torchvision

    teacher = tmp_path / "r34.pt"
    torch.save(torchvision.models.resnet34(num_classes=1000).state_dict(), teacher)
    run = tmp_path / "run"
    result = invoke_cli(
        "distill",
        "--teacher",
        str(teacher),
        "--budget",
        "smoke",
        "--steps",
        "3",
        "--out",
        str(run),
        "--eval",
        "none",
        "--synth-option",
        "batch_size=4",
        "--kd-steps",
        "1",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    stages = _manifest(run)["stages"]
    distill = stages["distill"]["metrics"]
    assert distill["student"] == "resnet18" and distill["student_steps"] > 0
    assert distill["cost"]["seconds_per_iteration"] > 0
    pool = TransferSet.load(run / "distill" / "transfer_set.pt")
    assert pool.pixels.shape[1:] == (3, 224, 224) and pool.logits.shape[1] == 1000
