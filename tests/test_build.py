"""End to end through the real CLI, with the smoke budget: build and skip on re-run (Ctrl-C, SIGTERM and SIGKILL
with their resumes: tests/test_hostile.py)."""

import json
from pathlib import Path

import onnx
import pytest
from forked_cli import fork_cli

from pipeline.data import fashion_mnist
from tests.conftest import ROOT, invoke_cli, run_cli

pytestmark = pytest.mark.slow


def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def test_smoke_build_of_the_embedded_default_teacher(tmp_path):
    run = tmp_path / "run"
    # steps, not the smoke budget's 17 s of training: the Ctrl-C test below runs on the budget's time
    result = run_cli(
        "build", "--budget", "smoke", "--steps", "8", "--out", str(run), "--json", env={"PIPELINE_LOG_EVERY_S": "0"}
    )
    assert result.returncode == 0, result.stderr
    # stderr is a pipe, as in a CI log: plain progress lines (every step here; every 30 s by default)
    distilling = [line for line in result.stderr.splitlines() if line.startswith("distill (resnet14")]
    assert distilling and "steps/s" in distilling[0] and "kd_loss" in distilling[0], result.stderr
    summary = json.loads(result.stdout)
    rows = {row["model"]: row for row in summary["rows"]}
    assert set(rows) == {"teacher", "student"}
    assert rows["teacher"]["arch"] == "resnet20" and rows["student"]["arch"] == "resnet14"
    for row in rows.values():
        assert row["latency_median_ms"] > 0 and row["latency_p90_ms"] >= row["latency_median_ms"]
        model = onnx.load(row["onnx"])
        onnx.checker.check_model(model)
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    manifest = _manifest(run)
    assert list(manifest["stages"]) == ["synthesize", "distill", "export", "bench"]
    assert manifest["preprocess"]["mean"] and manifest["preprocess"]["channels"] == 1
    # the plan before the work, from costs measured here, printed first and kept beside the actual
    assert result.stderr.index("plan: ETA") < result.stderr.index("synthesize: running")
    plan, actual = manifest["plan"], manifest["actual"]
    assert [s["name"] for s in plan["stages"]] == [s["name"] for s in actual["stages"]] == list(manifest["stages"])
    planned_steps = [s["steps"] for s in plan["stages"][:2]]
    assert sum(planned_steps) == 8 and [s["steps"] for s in actual["stages"][:2]] == planned_steps  # --steps 8
    assert plan["planned_s"] > 0 and actual["wall_s"] > 0 and plan["cpu"] == actual["cpu"]
    for name in ("teacher", "student"):
        export = manifest["stages"]["export"]["metrics"][name]
        assert export["parity_max_abs_diff"] <= 1e-3 and export["parity_top1_agreement"] >= 0.99
        assert export["preprocess"]["height"] == 28
    if fashion_mnist.is_available():
        # the embedded teacher is a real Fashion-MNIST model; the smoke student is only checked to be a classifier
        assert rows["teacher"]["accuracy"] > 0.88
        assert 0.0 <= rows["student"]["accuracy"] <= 1.0 and rows["teacher"]["eval_images"] == 1000

    again = invoke_cli(
        "build", "--budget", "smoke", "--steps", "8", "--out", str(run), "--json"
    )  # the entry point ran above
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("up to date, skipped") == 4
    assert _manifest(run)["stages"]["distill"]["finished_at"] == manifest["stages"]["distill"]["finished_at"]


def test_headline_usage_with_a_plain_torchvision_state_dict(tmp_path):
    """`pipeline build --teacher r34.pt` with nothing but torch.save(model.state_dict()): no --arch needed.
    (A ResNet-18 at 64 px keeps the smoke run short; test_load covers ResNet-34 identification.)"""
    import torch
    import torchvision

    teacher = tmp_path / "r18.pt"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), teacher)
    run = tmp_path / "run"
    result = invoke_cli(
        "build",
        "--teacher",
        str(teacher),
        "--budget",
        "smoke",
        "--steps",
        "4",
        "--input-shape",
        "3,64,64",
        "--out",
        str(run),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    rows = {row["model"]: row for row in json.loads(result.stdout)["rows"]}
    assert rows["teacher"]["arch"] == "resnet18" and rows["teacher"]["accuracy"] is None
    manifest = _manifest(run)
    assert manifest["teacher_format"] == "state_dict" and manifest["preprocess"]["channel_order"] == "RGB"
    assert manifest["preprocess"]["height"] == 64 and manifest["num_classes"] == 10


def test_prepare_passes_the_users_input_shape_to_the_first_load(tmp_path):
    """A traced TorchScript teacher has no recorded input shape: --input-shape must reach the loader at once."""
    import torch

    from pipeline.models import create_model
    from pipeline.recipes.context import prepare
    from pipeline.recipes.options import BuildOptions

    path = tmp_path / "traced.pt"
    torch.jit.save(torch.jit.trace(create_model("lenet5").eval(), torch.randn(1, 1, 28, 28)), path)
    options = BuildOptions(teacher=str(path), input_shape=(1, 28, 28), out=tmp_path / "run")
    ctx = prepare(options)
    assert ctx.teacher.source_format == "torchscript" and ctx.teacher.input_shape == (1, 28, 28)
    # issue 22 item 7: an unregistered teacher is named by its class wherever the run names its teacher
    from pipeline.recipes.build import plan_build

    assert ctx.teacher.name == "LeNet5, unregistered" and plan_build(options)["arch"] == "LeNet5, unregistered"


def test_a_second_process_on_the_same_run_folder_is_refused(tmp_path):
    import os

    from pipeline.stage import RunFolder

    run = RunFolder(tmp_path / "run")
    with run.lock():  # this test process plays the first `pipeline build`
        second = fork_cli("build", "--budget", "smoke", "--out", str(run.root), "--eval", "none", cwd=ROOT, timeout=120)
        assert second.returncode == 2 and f"is in use by pipeline process {os.getpid()}" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        assert not (run.root / "synthesize").exists()
    with run.lock():  # released: the next holder gets it
        pass


def test_plan_resolves_the_recipe_from_the_same_stage_factories_without_running_anything(tmp_path):
    """`--plan`: the stages a build would run, each with its named inputs and settings, resolved (defaults <
    budget < target < flags) but not run; nothing is written, not even the run folder."""
    from pipeline.recipes.build import plan_build
    from pipeline.recipes.options import BuildOptions

    plan = plan_build(BuildOptions(out=tmp_path / "run", budget="smoke", precision="int8", eval="none"))
    assert [stage["stage"] for stage in plan["stages"]] == ["synthesize", "distill", "export", "quantize", "bench"]
    inputs = {stage["stage"]: stage["inputs"] for stage in plan["stages"]}
    assert inputs["distill"]["transfer_set"] == "transfer_set from synthesize"
    assert inputs["quantize"]["onnx"] == "student from export"
    assert inputs["bench"] == {"teacher": "teacher from export", "student": "model from quantize"}
    assert plan["precision"] == "int8" and plan["synthesizer"] == "bn-inversion"  # auto, resolved for this teacher
    assert plan["recipe"] == "build"
    settings = plan["settings"]  # each layered setting says which layer gave it
    assert settings["precision"] == {"value": "int8", "from": "flag"}
    assert settings["drop_iterations"] == {"value": 20, "from": "budget smoke"}
    assert settings["latency_budget"] == {"value": None, "from": "default"}
    assert not any(stage["finished"] for stage in plan["stages"])
    assert not (tmp_path / "run").exists()
    from typer.testing import CliRunner

    from pipeline.cli import app

    shown = CliRunner().invoke(
        app, ["quantize", "--plan", "--budget", "smoke", "--out", str(tmp_path / "q")], terminal_width=200
    )
    assert shown.exit_code == 0, shown.output
    assert "nothing was run" in shown.output and "onnx: teacher from export" in shown.output
    assert "binary_iterations 20 (budget smoke)" in shown.output
    assert not (tmp_path / "q").exists()


def test_each_layered_setting_comes_from_the_last_layer_that_gives_it():
    """defaults < budget < target file < flags, in pipeline/layered.py, for the build and the gate alike."""
    from pipeline.budgets import get_budget
    from pipeline.gate.settings import GateSettings
    from pipeline.layered import Resolved, resolve
    from pipeline.recipes.options import BuildOptions
    from pipeline.recipes.resolve import build_settings
    from pipeline.targets import load_target, target_from_dict

    assert resolve(1, ("budget b", None), ("target t", 3), ("flag", None)) == Resolved(3, "target t")
    assert resolve(1, ("budget b", 2), ("target t", 3), ("flag", 4)) == Resolved(4, "flag")
    assert resolve(1, ("budget b", None)) == Resolved(1, "default")

    edge = target_from_dict(
        {
            "name": "edge",
            "description": "test",
            "runtime": "onnxruntime",
            "device": "cpu",
            "precision": "int8",
            "latency_reduction": 0.3,
            "gate": {"rounds": 25},
        }
    )
    smoke = get_budget("smoke")
    chosen = build_settings(BuildOptions(), smoke, edge)
    assert chosen["precision"] == Resolved("int8", "target edge")
    assert chosen["latency_budget"] == Resolved({"reduction": 0.3, "ms": None}, "target edge")
    assert chosen["drop_iterations"] == Resolved(smoke.drop_iterations, "budget smoke")
    flags = build_settings(BuildOptions(precision="fp32", latency_ms=2.0, drop_iterations=7), smoke, edge)
    assert flags["precision"] == Resolved("fp32", "flag")
    assert flags["latency_budget"] == Resolved({"reduction": None, "ms": 2.0}, "flag")  # the pair, whole
    assert flags["drop_iterations"] == Resolved(7, "flag")

    assert GateSettings.resolve(edge).rounds == 25 and GateSettings.resolve(edge, rounds=40).rounds == 40
    assert GateSettings.resolve(load_target("cpu")).rounds == GateSettings().rounds


def test_every_command_follows_an_explicit_recipe():
    """recipes/plan.py: one list of steps per command; conditions (quantised precision, a TensorRT target) are
    decided when their step is reached, and `--plan` of a budget search shows quantize as waiting on the search."""
    from dataclasses import replace

    from pipeline.recipes.build import plan_build
    from pipeline.recipes.options import STAGE_ORDER, BuildOptions
    from pipeline.recipes.plan import RECIPES, choose_recipe, recipe_steps
    from pipeline.targets import load_target

    def chosen(**options) -> str:
        return choose_recipe(BuildOptions(**options)).name

    assert chosen() == "build" and chosen(recipe="drop") == "drop"
    assert chosen(recipe="drop", images="few/") == "drop, few-shot on real images"
    assert chosen(recipe="quantize", calib="real") == "quantize, calibrated on real images"
    assert chosen(drop_blocks=("layer1.0",)) == "build, named blocks dropped from the student"
    assert chosen(latency_reduction=0.3) == "build, budget search over teacher and student"
    # `build` itself takes a target file's latency budget as part of what it delivers; `pipeline distill` does not
    budgeted = replace(load_target("cpu"), latency_reduction=0.3)
    assert choose_recipe(BuildOptions(auto_search=True), budgeted).name.startswith("build, budget search")
    assert choose_recipe(BuildOptions(), budgeted).name == "build"
    with pytest.raises(ValueError, match="unknown command"):
        chosen(recipe="compress")
    assert [s.stage for s in recipe_steps(RECIPES["search"], "bench")] == [
        "synthesize",
        "search",
        "export",
        "quantize",
        "engine",
        "bench",
    ]
    assert [s.describe() for s in recipe_steps(RECIPES["build"], "distill")] == ["synthesize", "distill"]
    for name, recipe in RECIPES.items():  # in the order stages hand on to each other
        stages = list(recipe.stages)
        assert stages == sorted(stages, key=STAGE_ORDER.index) and stages[-1] == "bench", name
    # what the stage factories ask the recipe instead of the command
    assert RECIPES["search"].model_from == "search" and RECIPES["quantize"].model_from == "teacher"
    assert RECIPES["build, named blocks dropped from the student"].model_from == "drop"
    assert RECIPES["build"].trains_a_student and not RECIPES["drop"].trains_a_student

    plan = plan_build(BuildOptions(recipe="search", latency_reduction=0.3, budget="smoke", eval="none"))
    assert plan["recipe"] == "search" and plan["precision"] == "chosen by the search"
    waiting = next(stage for stage in plan["stages"] if stage["stage"] == "quantize")
    assert waiting["when"] == "the handed-on precision is not fp32" and not waiting["config"]


def test_plan_after_a_finished_search_shows_the_precision_it_chose(tmp_path):
    """`--plan` reads the run folder as the run would: once the search has chosen INT8, quantize is planned
    with that precision (not "waiting"), and the plan names it."""
    from pipeline.recipes.build import plan_build
    from pipeline.recipes.options import BuildOptions
    from pipeline.stage import RunFolder

    run = RunFolder(tmp_path / "run")
    run.manifest["stages"]["search"] = {"status": "done", "metrics": {"precision": "int8"}, "artifacts": {}}
    run.save_manifest()
    options = BuildOptions(recipe="search", latency_reduction=0.3, budget="smoke", eval="none", out=run.root)
    plan = plan_build(options)
    quantize = next(stage for stage in plan["stages"] if stage["stage"] == "quantize")
    assert plan["precision"] == "int8" and "when" not in quantize and quantize["config"]["precision"] == "int8"


class _FinishedSearch:
    """The one thing `handed_on_precision` reads from a run folder: the search stage's manifest entry."""

    def __init__(self, chosen: str | None):
        self.chosen = chosen

    def entry(self, name: str):
        if name != "search" or self.chosen is None:
            return None
        return {"status": "done", "metrics": {"precision": self.chosen}}


def test_the_handed_on_precision_after_a_search_is_read_from_the_run_and_the_options_stay_as_given():
    from pipeline.recipes.options import BuildOptions
    from pipeline.recipes.plan import RECIPES, handed_on_precision, stages_to_run
    from pipeline.targets import load_target

    cpu, options, search = load_target("cpu"), BuildOptions(recipe="search", latency_reduction=0.3), RECIPES["search"]
    assert handed_on_precision(search, options, cpu) == "fp32"  # before the search: the setting (the cpu target's)
    assert "quantize" not in stages_to_run(search, options, "bench", cpu, _FinishedSearch(None))
    assert handed_on_precision(search, options, cpu, _FinishedSearch("int8")) == "int8"
    assert stages_to_run(search, options, "bench", cpu, _FinishedSearch("int8"))[-2:] == ["quantize", "bench"]
    assert options.precision is None
    # without a search in the recipe, a run's entries never change the precision
    assert handed_on_precision(RECIPES["build"], BuildOptions(), cpu, _FinishedSearch("int8")) == "fp32"
