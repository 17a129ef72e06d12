"""The command line as a user meets it: --help teaches, errors are one line with a non-zero exit."""

import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from tests.conftest import invoke_cli

runner = CliRunner()
COMMANDS = [
    ["build"],
    ["synthesize"],
    ["distill"],
    ["drop"],
    ["search"],
    ["export"],
    ["bench"],
    ["models"],
    ["targets"],
    ["synthesizers"],
    ["quantize"],
    ["engine"],
    ["check"],
    ["gate"],
    ["bundle"],
    ["verify"],
    ["report"],
    ["teacher"],
    ["teacher", "train"],
    ["teacher", "inspect"],
]


def test_top_level_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in (
        "build",
        "synthesize",
        "distill",
        "drop",
        "search",
        "export",
        "bench",
        "models",
        "targets",
        "teacher",
    ):
        assert command in result.output


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_build_help_documents_the_contract():
    text = runner.invoke(app, ["build", "--help"], terminal_width=200).output
    for option in (
        "--teacher",
        "--arch",
        "--target",
        "--budget",
        "--out",
        "--trust-checkpoint",
        "--json",
        "--debug",
        "--steps",
        "--drop-blocks",
        "--latency-ms",
    ):
        assert option in text


def test_help_quotes_the_training_defaults_the_code_uses():
    # the CLI stays free of torch imports, so these defaults are written out in its help: keep them true
    from pipeline.cli import options as cli
    from pipeline.synthesize.data_free_loop import StudentTraining

    assert f"(default {StudentTraining.kd_steps})" in cli.KD_STEPS.help
    assert f"(default {StudentTraining.temperature:g})" in cli.TEMPERATURE.help
    from pipeline.budgets import BUDGETS
    from pipeline.kd import FeatureKDSettings

    assert f"quick {BUDGETS['quick'].drop_iterations}, batch {FeatureKDSettings.batch_size}" in cli.DROP_ITERATIONS.help
    assert f"default {FeatureKDSettings.lr:g}" in cli.DROP_LR.help


def _help(command: list[str], width: int = 200) -> str:
    result = runner.invoke(app, [*command, "--help"], terminal_width=width, env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    return result.output


def _source_help(command: list[str]) -> str:
    """The help as written in the code: the command's docstring and every option's help."""
    import typer

    click_command = typer.main.get_command(app)
    for name in command:
        click_command = click_command.commands[name]
    return " ".join([click_command.help or "", *(getattr(p, "help", None) or "" for p in click_command.params)])


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_rendered_help_keeps_every_word_and_rewraps_paragraphs(command):
    """Markup must not eat text (rich once rendered `-> [drop] ->` as `->  ->` and `<out>/x` as `/x`), a literal
    `%%` must not show, and paragraphs are re-wrapped to the terminal rather than broken where the source
    line ended."""
    import re
    from collections import Counter

    rendered = _help(command)
    assert "%%" not in rendered and "->  ->" not in rendered
    words = Counter(re.findall(r"[A-Za-z0-9]+", rendered))
    missing = {w: n for w, n in Counter(re.findall(r"[A-Za-z0-9]+", _source_help(command))).items() if words[w] < n}
    assert not missing, f"words of the source help missing from the rendered help: {missing}"
    description = rendered.split("╭")[0].splitlines()[3:]  # after the usage line
    for line, following in zip(description, description[1:]):
        if line.strip() and following.strip():  # inside a paragraph: the line was broken by wrapping only
            assert len(line.rstrip()) > 150, f"line broken mid-paragraph: {line.strip()!r}"


def test_build_help_groups_its_options_into_panels():
    text = _help(["build"])
    panels = [
        title
        for title in ("Teacher", "Data-free training", "Compression", "Target and measurement", "Output")
        if f"╭─ {title} " in text
    ]
    assert len(panels) == 5, panels
    order = [
        "╭─ Teacher",
        "│ --teacher",
        "╭─ Data-free training",
        "│ --synthesizer",
        "╭─ Compression",
        "│ --precision",
        "╭─ Target and measurement",
        "│ --host",
        "╭─ Output",
        "│ --out",
    ]
    assert [text.index(piece) for piece in order] == sorted(text.index(piece) for piece in order)


def test_option_defaults_are_the_build_options_defaults():
    from pipeline.cli import options
    from pipeline.recipes.options import BuildOptions

    text = _help(["build"])
    for name in ("budget", "synthesizer", "calib", "calib_method", "max_accuracy_drop", "seed", "target"):
        assert f"[default: ({getattr(BuildOptions(), name)})]" in text, name
    assert options.CALIB_IMAGES.default is None  # not given: BuildOptions decides


def _assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr  # status lines may precede it
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in errors[0]


def test_missing_teacher_file(tmp_path):
    _assert_one_line_error(
        invoke_cli("build", "--teacher", str(tmp_path / "r34.pt"), "--out", str(tmp_path / "run")), "r34.pt"
    )


def test_corrupt_teacher_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00not a checkpoint" * 10)
    _assert_one_line_error(invoke_cli("build", "--teacher", str(bad), "--out", str(tmp_path / "run")), "bad.pt")


def test_wrong_arch_names_keys(tmp_path):
    from pipeline.models import create_model

    path = tmp_path / "lenet.pt"
    torch.save(create_model("lenet5").state_dict(), path)
    _assert_one_line_error(
        invoke_cli("export", "--teacher", str(path), "--arch", "resnet20", "--out", str(tmp_path / "x")), "resnet20"
    )


def test_wrong_input_shape(tmp_path):
    _assert_one_line_error(
        invoke_cli("teacher", "inspect", "--teacher", "embedded:lenet5-fmnist", "--input-shape", "3,4,4"), "input shape"
    )


def test_unknown_target_and_budget(tmp_path):
    _assert_one_line_error(invoke_cli("build", "--target", "nowhere", "--out", str(tmp_path / "r")), "nowhere")
    _assert_one_line_error(invoke_cli("build", "--budget", "huge", "--out", str(tmp_path / "r")), "huge")


def test_debug_shows_the_traceback(tmp_path):
    result = invoke_cli("build", "--teacher", str(tmp_path / "missing.pt"), "--debug")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_models_and_targets_list():
    assert "resnet34" in runner.invoke(app, ["models"], terminal_width=200).output
    assert "cpu" in runner.invoke(app, ["targets"], terminal_width=200).output


def test_bench_a_checkpoint_with_eval_turned_off(tmp_path):
    """`pipeline bench --teacher embedded:lenet5-fmnist --budget smoke --eval none --json`, through the function the
    command hands its options to (recipes/single_model.py::run_bench_only): export the checkpoint, then bench it."""
    import json

    from pipeline.assets import resolve_teacher
    from pipeline.data import fashion_mnist
    from pipeline.recipes.context import choose_eval
    from pipeline.recipes.single_model import run_bench_only
    from pipeline.teacher_spec import TeacherSpec

    teacher = "embedded:lenet5-fmnist"
    # left unset, this teacher (trained on Fashion-MNIST) would be scored on it: 'none' is what turns that off
    default = choose_eval(None, TeacherSpec().load(resolve_teacher(teacher)))
    assert default == ("fmnist" if fashion_mnist.is_available() else None)
    measured = run_bench_only(
        teacher, spec=TeacherSpec(), target_name=None, budget_name="smoke", out=tmp_path / "bench", eval_spec="none"
    )
    assert "accuracy" not in measured and measured["latency"]["median_ms"] > 0
    assert measured["onnx"].endswith("model.onnx")
    stages = json.loads((tmp_path / "bench" / "manifest.json").read_text())["stages"]
    assert list(stages) == ["export", "bench"]
    assert stages["export"]["config"]["eval"] is None and stages["bench"]["config"]["eval"] is None


def test_help_loads_no_torch():
    """`pipeline --help` and every command's help stay fast: the CLI imports its settings, not the stages."""
    import subprocess
    import sys

    code = "import sys, pipeline.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_log_that_is_not_a_terminal_gets_progress_lines_with_rate_eta_and_loss(monkeypatch, capsys):
    """Item 5 of issue 22: a CI log is never silent. stderr is captured here, so not a terminal."""
    import time

    from pipeline import progress

    monkeypatch.setattr(progress, "_quiet", False)
    monkeypatch.setenv("PIPELINE_LOG_EVERY_S", "0")
    with progress.progress_bar("distill (lenet5-half)", 4) as bar:
        bar.advance(0)  # a loop first advances by the steps an earlier run made (none)
        for step in range(4):
            time.sleep(0.01)
            bar.advance(loss=1.0 / (step + 1))
    with progress.progress_bar("synthesize (dafl)", None) as bar:  # bounded by time: the fraction gives the ETA
        bar.advance(0)
        time.sleep(0.05)
        bar.advance(fraction=0.25)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("distill (lenet5-half): step 1/4, ") and "steps/s" in lines[0], lines
    assert "ETA" in lines[0] and lines[0].endswith("loss 1")
    assert lines[3].startswith("distill (lenet5-half): step 4/4") and lines[3].endswith("loss 0.25")
    assert lines[4].startswith("synthesize (dafl): step 1, ") and "ETA 0 s" in lines[4]

    # one step slower than the interval: the watchdog still writes a line while it runs
    monkeypatch.setenv("PIPELINE_LOG_EVERY_S", "0.2")
    with progress.progress_bar("distill (resnet34)", 10) as bar:
        bar.advance(0)
        time.sleep(0.7)
    assert "distill (resnet34): step 0/10" in capsys.readouterr().err

    progress.set_quiet(True)  # --quiet: nothing
    with progress.progress_bar("distill (lenet5-half)", 2) as bar:
        bar.advance(0)
        bar.advance()
    assert capsys.readouterr().err == ""


def test_a_library_error_without_text_still_gives_a_one_line_message():
    """onnxruntime's shape inference fails on bare asserts: an AssertionError with no text must not turn the
    one-line message into an IndexError."""
    from pipeline.errors import first_line

    assert first_line(AssertionError()) == "AssertionError"
    assert first_line(RuntimeError("  shape mismatch\n  at node 3")) == "shape mismatch"
