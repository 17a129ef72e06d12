"""Data-free training through the real CLI (its options reaching the stages, torchrun data parallel), and a big
ImageNet-shaped teacher through the same stages."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cli_runs
import pytest
import torch

from pipeline.data.transfer_set import TransferSet
from pipeline.distill.stage import DistillConfig, DistillStage
from pipeline.models.load import load_model
from pipeline.models.student_choice import choose_student
from pipeline.recipes.context import auto_synthesizer
from pipeline.stage import RunFolder
from pipeline.synthesize.base import resolve_options
from pipeline.synthesize.data_free_loop import StudentTraining
from pipeline.synthesize.stage import SynthesizeConfig, SynthesizeStage
from tests.conftest import ROOT, invoke_cli, needs_fmnist

pytestmark = pytest.mark.slow


def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


@needs_fmnist  # --mix-images fmnist-train
@pytest.mark.parametrize(
    "method, extra, synthesizer, training",
    # every synthesizer trains through distill in tests/test_stages.py (mixed real images too); these check that
    # the CLI's options reach the stages' configs, as the run would build them (`--plan`: the same factories)
    [
        ("dafl", ["--synth-preset", "paper", "--synth-option", "batch_size=32"], {"batch_size": 32}, {}),
        (
            "bn-inversion",
            ["--mix-images", "fmnist-train", "--mix-per-class", "3", "--ema", "0.99", "--feature-weight", "1"],
            {},
            {"ema": 0.99, "feature_weight": 1.0},
        ),
    ],
)
def test_distill_command_passes_the_synthesizer_options_through(method, extra, synthesizer, training, tmp_path):
    from pipeline.synthesize import resolve_options

    run = tmp_path / "run"
    result = invoke_cli(
        "distill",
        "--teacher",
        "embedded:lenet5-fmnist",
        "--budget",
        "smoke",
        "--out",
        str(run),
        "--synthesizer",
        method,
        *extra,
        "--plan",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert [stage["stage"] for stage in plan["stages"]] == ["synthesize", "distill"] and not run.exists()
    synthesize, distill = (stage["config"] for stage in plan["stages"])
    assert synthesize["method"] == method
    preset = resolve_options(method, "paper" if "--synth-preset" in extra else None)
    expected = {**preset, **synthesizer}
    assert {key: synthesize["options"][key] for key in expected if key != "batch_size"} == {
        key: value for key, value in expected.items() if key != "batch_size"
    }
    if "batch_size" in synthesizer:  # an explicit --synth-option wins over the budget's batch size
        assert synthesize["options"]["batch_size"] == synthesizer["batch_size"]
    assert {key: distill["training"][key] for key in training} == training
    mixed = "--mix-images" in extra
    for config in (synthesize, distill):  # real images join the pool in both stages, or in neither
        assert (config["mix"] is not None) == mixed
        if mixed:
            assert config["mix"]["path"] == "fmnist-train" and config["mix"]["per_class"] == 3


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
    cli_runs.record(command[command.index("pipeline.cli") + 1 :], result.returncode)  # an end-to-end run, counted
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
    """`pipeline distill --teacher r34.pt --budget smoke --steps 3 --eval none --synth-option batch_size=4
    --kd-steps 1`, as its stages: a torchvision resnet34 (3x224x224, 1000 classes, plain state_dict) teacher."""
    import torchvision

    teacher_path = tmp_path / "r34.pt"
    torch.save(torchvision.models.resnet34(num_classes=1000).state_dict(), teacher_path)
    teacher = load_model(teacher_path)  # as the command loads it, with no --arch or --input-shape
    assert (teacher.arch, teacher.input_shape, teacher.num_classes) == ("resnet34", (3, 224, 224), 1000)
    # the command's choices: the student for this teacher, and the synthesizer for a teacher with BatchNorm
    student = choose_student(None, teacher.model, teacher.arch, teacher.input_shape, teacher.num_classes, teacher.name)
    method = auto_synthesizer(teacher)
    assert (student.name, method) == ("resnet18", "bn-inversion")
    run = RunFolder(tmp_path / "run")
    options = {**resolve_options(method), "batch_size": 4}
    run.run(SynthesizeStage(teacher_path, SynthesizeConfig(seconds=60, method=method, steps=1, options=options)))
    training = StudentTraining(batch_size=4, kd_steps=1)
    config = DistillConfig(student=student.name, seconds=60, steps=2, training=training)
    stage = DistillStage(
        teacher_path, run.artifact("synthesize", "transfer_set"), run.artifact("synthesize", "synthesizer"), config
    )
    distill = run.run(stage)["metrics"]
    assert distill["student"] == "resnet18" and distill["student_steps"] > 0
    assert distill["cost"]["seconds_per_iteration"] > 0
    pool = TransferSet.load(run.artifact("distill", "transfer_set"))
    assert pool.pixels.shape[1:] == (3, 224, 224) and pool.logits.shape[1] == 1000
    student_model = load_model(run.artifact("distill", "student"))
    assert student_model.arch == "resnet18" and student_model.input_shape == (3, 224, 224)
    assert student_model.num_classes == 1000
