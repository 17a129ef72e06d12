"""The command line as a user meets it: --help teaches, errors are one line with a non-zero exit."""

import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from tests.conftest import run_cli

runner = CliRunner()
COMMANDS = [["build"], ["synthesize"], ["distill"], ["drop"], ["search"], ["export"], ["bench"], ["models"], ["targets"],
            ["synthesizers"], ["quantize"], ["engine"], ["check"], ["gate"], ["bundle"], ["verify"], ["report"],
            ["teacher"], ["teacher", "train"], ["teacher", "inspect"]]


def test_top_level_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("build", "synthesize", "distill", "drop", "search", "export", "bench", "models", "targets", "teacher"):
        assert command in result.output


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_build_help_documents_the_contract():
    text = runner.invoke(app, ["build", "--help"], terminal_width=200).output
    for option in ("--teacher", "--arch", "--target", "--budget", "--out", "--trust-checkpoint", "--json", "--debug",
                   "--steps", "--drop-blocks", "--latency-ms"):
        assert option in text


def test_help_quotes_the_training_defaults_the_code_uses():
    # cli.py stays free of torch imports, so the defaults are written out in its help: keep them true
    from pipeline import cli
    from pipeline.distill.engine import StudentTraining

    assert f"(default {StudentTraining.kd_steps})" in cli.KD_STEPS.help
    assert f"(default {StudentTraining.temperature:g})" in cli.TEMPERATURE.help
    from pipeline.budgets import BUDGETS
    from pipeline.drop.finetune import RecoverySettings

    assert f"quick {BUDGETS['quick'].drop_iterations}, batch {RecoverySettings.batch_size}" in cli.DROP_ITERATIONS.help
    assert f"default {RecoverySettings.lr:g}" in cli.DROP_LR.help


def _assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr  # status lines may precede it
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in errors[0]


def test_missing_teacher_file(tmp_path):
    _assert_one_line_error(run_cli("build", "--teacher", str(tmp_path / "r34.pt"), "--out", str(tmp_path / "run")), "r34.pt")


def test_corrupt_teacher_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00not a checkpoint" * 10)
    _assert_one_line_error(run_cli("build", "--teacher", str(bad), "--out", str(tmp_path / "run")), "bad.pt")


def test_wrong_arch_names_keys(tmp_path):
    from pipeline.models import create_model

    path = tmp_path / "lenet.pt"
    torch.save(create_model("lenet5").state_dict(), path)
    _assert_one_line_error(run_cli("export", "--teacher", str(path), "--arch", "resnet20", "--out", str(tmp_path / "x")),
                           "resnet20")


def test_wrong_input_shape(tmp_path):
    _assert_one_line_error(run_cli("teacher", "inspect", "--teacher", "embedded:lenet5-fmnist", "--input-shape", "3,4,4"),
                           "input shape")


def test_unknown_target_and_budget(tmp_path):
    _assert_one_line_error(run_cli("build", "--target", "nowhere", "--out", str(tmp_path / "r")), "nowhere")
    _assert_one_line_error(run_cli("build", "--budget", "huge", "--out", str(tmp_path / "r")), "huge")


def test_debug_shows_the_traceback(tmp_path):
    result = run_cli("build", "--teacher", str(tmp_path / "missing.pt"), "--debug")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_models_and_targets_list():
    assert "resnet34" in runner.invoke(app, ["models"], terminal_width=200).output
    assert "cpu" in runner.invoke(app, ["targets"], terminal_width=200).output


def test_bench_a_checkpoint_with_eval_turned_off(tmp_path):
    import json

    result = run_cli("bench", "--teacher", "embedded:lenet5-fmnist", "--budget", "smoke", "--eval", "none",
                     "--out", str(tmp_path / "bench"), "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)
    assert "accuracy" not in measured and measured["latency"]["median_ms"] > 0
    assert measured["onnx"].endswith("model.onnx")
