"""Every stage inside the budget's wall time (issue 22 item 2) and a plan that can deliver (item 4): the drop
stage's probes and fine-tune bounded by seconds, the selection's timing share, the plan fitted to the whole
budget, and the build that compresses its teacher when a student would get too few KD steps."""

import copy
import json
import time
from dataclasses import replace

import pytest
import torch

from pipeline.assets import resolve_teacher
from pipeline.budgets import Budget, get_budget
from pipeline.drop.latency_table import session_estimate_s
from pipeline.drop.recoverability import MIN_EVAL_IMAGES, RecoverabilityProbe, RecoverabilitySettings
from pipeline.drop.select import LatencyBudget, TimingShare, expected_probes, greedy_drop
from pipeline.kd import FeatureKDSettings, feature_kd
from pipeline.measure import LatencySettings
from pipeline.models.load import load_model
from pipeline.recipes import deliver
from pipeline.recipes.costs import nothing_to_plan
from pipeline.recipes.fit import MIN_SHARE, fit_to_budget
from pipeline.recipes.plan import COMPRESS_TEACHER


def _resnet20():
    loaded = load_model(resolve_teacher("embedded:resnet20-fmnist"))
    return loaded, torch.randn(96, *loaded.input_shape)


def test_feature_kd_ends_at_its_seconds_or_its_iterations_whichever_comes_first(tmp_path):
    loaded, images = _resnet20()
    teacher, student = loaded.model.eval(), copy.deepcopy(loaded.model)
    start = time.monotonic()
    timed = feature_kd(
        student, teacher, images, FeatureKDSettings(iterations=100_000, batch_size=8, seconds=1.0), tmp_path / "a"
    )
    assert time.monotonic() - start < 10 and timed["stopped_by"] == "seconds" and 0 < timed["iterations"] < 100_000
    counted = feature_kd(
        student, teacher, images, FeatureKDSettings(iterations=3, batch_size=8, seconds=600), tmp_path / "b"
    )
    assert counted["stopped_by"] == "iterations" and counted["iterations"] == 3
    assert FeatureKDSettings().to_dict()["seconds"] is None  # unbounded unless a budget gives it


def test_a_time_bounded_probe_gives_every_candidate_the_same_steps_and_none_when_time_buys_none():
    loaded, images = _resnet20()
    unbounded = RecoverabilityProbe(loaded.model, images, loaded.input_shape, RecoverabilitySettings(steps=5))
    assert unbounded.fit_to(40, ["layer1.0"]) is None and unbounded.steps == 5
    generous = RecoverabilityProbe(
        loaded.model, images, loaded.input_shape, RecoverabilitySettings(steps=5, seconds=600)
    )
    assert generous.fit_to(40, ["layer1.0"])["steps"] == 5  # time enough: the configured steps
    tight = RecoverabilityProbe(loaded.model, images, loaded.input_shape, RecoverabilitySettings(steps=5, seconds=1e-4))
    sizing = tight.fit_to(40, ["layer1.0"])
    assert sizing["steps"] == 0 and tight.steps == 0 and sizing["probes_expected"] == 40
    assert len(tight.eval_images) == min(MIN_EVAL_IMAGES, len(unbounded.eval_images)) == sizing["eval_images"]
    # 0 steps: R is the bare drop's feature error with identity adapters, the same for any probe order
    assert tight(["layer2.1"]) == pytest.approx(tight(["layer2.1"])) and tight(["layer2.1"]) > 0


def test_the_probes_expected_follow_the_blocks_of_mean_saving_the_budget_needs():
    table = {"full_ms": 10.0, "blocks": [{"block": n, "saving_ms": s} for n, s in zip("abcd", (2.0, 1.5, 1.0, 0.5))]}
    assert expected_probes(table, LatencyBudget(reduction=0.3)) == 4 + 3 + 2  # 3 ms at 1.25 ms a block: three
    assert expected_probes(table, LatencyBudget(reduction=0.1)) == 4
    assert expected_probes(table, LatencyBudget(reduction=0.9)) == 4 + 3 + 2 + 1  # more than every block


def test_the_selection_measures_while_its_timing_share_lasts_then_the_table_stands_in():
    savings = {"a": 0.3, "b": 0.2, "c": 0.1, "d": 0.05}
    table = {"full_ms": 1.0, "blocks": [{"block": n, "saving_ms": s} for n, s in savings.items()]}
    calls = []

    def timer(dropped, candidates):
        calls.append(list(candidates))
        time.sleep(0.05)
        current = 1.0 - sum(savings[n] for n in dropped)
        return {"full": 1.0, "current": current, **{c: current - savings[c] for c in candidates}}

    share = TimingShare(table, timer, seconds=0.01)  # one later step measured, then the table
    result = greedy_drop(table, LatencyBudget(reduction=0.55), lambda dropped: 1.0, share)
    assert result["dropped"] == ["a", "b", "c"]
    assert [step["saving_source"] for step in result["steps"]] == ["table", "measured", "table"]
    assert calls[-1] == [] and sum(1 for c in calls if c) == 1  # the check is always measured
    assert share.spent >= 0.05

    calls.clear()  # a first step estimated over the share is not measured either: the table throughout
    share = TimingShare(table, timer, seconds=1.0, first_s=session_estimate_s(LatencySettings(), 400.0, 6))
    result = greedy_drop(table, LatencyBudget(reduction=0.55), lambda dropped: 1.0, share)
    assert [step["saving_source"] for step in result["steps"]] == ["table"] * 3 and calls == [[]]


def test_a_session_estimate_counts_warm_up_runs_and_the_floor_of_rounds():
    settings = LatencySettings(warmup=10, runs=100, rounds=50, max_seconds=0.5)
    # 50 ms a call: 10 runs fill the half second; 3 warm-up calls (ROUND_WARMUP); the floor of 20 rounds
    assert session_estimate_s(settings, 50.0, 4) == pytest.approx(4 * 20 * (3 + 10) * 0.05)
    assert session_estimate_s(replace(settings, source="remote"), 50.0, 1) == pytest.approx(50 * 13 * 0.05)


def _plan(student_steps: int) -> dict:
    distill = {"name": "distill", "steps": student_steps // 8, "student_steps": student_steps, "unit_s": 2.0}
    return {"stages": [distill], "planned_s": 100.0, "unplanned": [], "unit_costs": {"probe_s": 1.0}}


def _plan_for_quality_at_smoke(monkeypatch):
    """The smoke budget (fast) as if it planned for quality: smoke itself always follows the command's recipe."""
    from pipeline import budgets

    monkeypatch.setitem(budgets.BUDGETS, "smoke", replace(budgets.BUDGETS["smoke"], plans_for_quality=True))


def _context(tmp_path, **options):
    from pipeline.recipes.context import prepare
    from pipeline.recipes.options import BuildOptions

    given = {"budget": "smoke", "eval": "none", "out": tmp_path / "run", "until": "bench", **options}
    return prepare(BuildOptions(**given))


def test_the_planners_minimum_kd_steps_is_the_measured_one():
    from pathlib import Path

    measured = json.loads((Path(__file__).parents[1] / "benchmarks/results/kd_steps_needed.json").read_text())
    assert deliver.MIN_KD_STEPS == measured["min_kd_steps"]


def test_a_student_with_too_few_kd_steps_gives_way_to_the_compressed_teacher(tmp_path, monkeypatch):
    _plan_for_quality_at_smoke(monkeypatch)
    ctx = _context(tmp_path)
    few = deliver.compress_instead(ctx, _plan(deliver.MIN_KD_STEPS // 2))
    assert few is not None and few[0].name == COMPRESS_TEACHER
    assert f"~{deliver.MIN_KD_STEPS // 2} KD steps" in few[1] and f"needs {deliver.MIN_KD_STEPS}" in few[1]
    assert "--budget" in few[1] and "--device cuda" in few[1] and f"--student {ctx.student}" in few[1]
    assert deliver.compress_instead(ctx, _plan(deliver.MIN_KD_STEPS)) is None  # enough steps: distil
    named = _context(tmp_path, student="resnet14")
    assert deliver.compress_instead(named, _plan(8)) is None  # the user named the student
    assert deliver.compress_instead(_context(tmp_path, steps=4), _plan(8)) is None  # --steps: reproducible
    lenet = _context(tmp_path, teacher="embedded:lenet5-fmnist")
    assert deliver.compress_instead(lenet, _plan(8)) is None  # no residual blocks to drop
    monkeypatch.undo()
    assert deliver.compress_instead(_context(tmp_path), _plan(8)) is None  # smoke: the command's own recipe


def test_a_plan_over_its_budget_scales_the_time_bounded_stages_and_a_resumed_run_keeps_the_fit():
    budget = get_budget("quick")
    over = {
        "stages": [
            {"name": "synthesize", "planned_s": 300.0, "elastic_s": 300.0},
            {"name": "drop", "planned_s": 900.0, "elastic_s": 600.0},
        ],
        "planned_s": 1200.0,
        "unplanned": ["quantize"],
        "unit_costs": {"probe_s": 0.0},
        "probe": {"teacher": "x"},
    }
    fitted = fit_to_budget(budget, over)
    assert fitted["factor"] == pytest.approx((0.95 * 900 - 300) / 900, abs=1e-3)  # planned to 95 % of the budget
    assert fitted["budget"]["drop_seconds"] == pytest.approx(budget.drop_seconds * fitted["factor"], abs=0.5)
    assert fitted["budget"]["bench_runs"] == budget.bench_runs and "quantize, not estimated" in fitted["note"]
    assert fit_to_budget(budget, {**over, "planned_s": 850.0}) is None  # it fits
    assert fit_to_budget(budget, {**over, "planned_s": 5000.0})["factor"] == MIN_SHARE  # the fixed part alone is over
    earlier = {"fitted": {**fitted, "factor": 0.42}, "probe": over["probe"]}
    assert fit_to_budget(budget, over, earlier)["factor"] == 0.42  # the same costs on resume: the same seconds
    assert fit_to_budget(budget, {**over, "probe": {"teacher": "y"}}, earlier)["factor"] != 0.42
    assert fit_to_budget(budget, nothing_to_plan(), earlier)["factor"] == 0.42  # all finished: as they ran


def test_a_plan_that_is_not_linear_in_its_seconds_is_refitted_until_it_fits():
    """A probe keeps a pass over its fewest held-back images whatever its seconds: the first factor leaves the
    scaled plan over; re-planning the scaled budget from the same costs refines it (the r50@224 build planned
    915 s of 900 s with a single factor)."""
    budget = get_budget("quick")
    floor_s = 150.0  # fixed only once the seconds are short

    def plan_for(fitted) -> dict:
        share = fitted.drop_seconds / budget.drop_seconds
        elastic = 600.0 * share
        fixed = 300.0 + (floor_s if share < 0.95 else 0.0)
        return {
            "stages": [{"name": "drop", "planned_s": fixed + elastic, "elastic_s": elastic}],
            "planned_s": fixed + elastic,
            "unit_costs": {"probe_s": 10.0},
        }

    once = fit_to_budget(budget, plan_for(budget))
    assert plan_for(Budget(**once["budget"]))["planned_s"] + 10.0 > 0.95 * 900 + 50  # one factor: still over
    refitted = fit_to_budget(budget, plan_for(budget), replan=plan_for)
    planned = plan_for(Budget(**refitted["budget"]))["planned_s"] + 10.0
    assert 0.95 * 900 * 0.98 <= planned <= 0.95 * 900 * 1.005 and refitted["factor"] < once["factor"]
    assert refitted["from"] == budget.to_dict()  # a resumed run recognises the budget it was asked


def test_a_build_that_compresses_its_teacher_runs_end_to_end_and_says_why(tmp_path, monkeypatch):
    """The cpu target names no latency budget: the compressed teacher aims at the recipe's own 30 % cut."""
    from pipeline.recipes.build import plan_build, run_build
    from pipeline.recipes.options import BuildOptions

    monkeypatch.setattr(deliver, "MIN_KD_STEPS", 10**9)  # a student can never get enough here
    _plan_for_quality_at_smoke(monkeypatch)
    options = BuildOptions(budget="smoke", eval="none", out=tmp_path / "run", target="cpu")
    planned = plan_build(options)
    assert planned["recipe"] == COMPRESS_TEACHER and "compresses the teacher instead" in planned["recipe_note"]
    assert [stage["stage"] for stage in planned["stages"]][:2] == ["synthesize", "drop"]
    summary = run_build(options)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["recipe"] == COMPRESS_TEACHER and "compresses the teacher instead" in manifest["recipe_note"]
    assert "distill" not in manifest["stages"] and manifest["stages"]["drop"]["status"] == "done"
    assert manifest["stages"]["drop"]["config"]["reduction"] == 0.3
    # the drop stage's parts, planned and as they ran; its fine-tune never longer than its seconds
    drop = manifest["stages"]["drop"]["metrics"]
    assert drop["finetune_seconds"]["given"] <= drop["finetune_seconds"]["configured"]
    planned, actual = ({s["name"]: s for s in manifest[key]["stages"]}["drop"] for key in ("plan", "actual"))
    parts = {"table", "selection", "fine_tune", "final_timing"}
    assert set(planned["phases_s"]) == set(actual["phases_s"]) == set(drop["phase_s"]) == parts
    assert any("compresses the teacher instead" in note for note in summary["notes"])
    again = run_build(replace(options))  # resumed: the same decision, every stage up to date
    assert again["run_folder"] == summary["run_folder"]
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["plan"]["stages"] == []


def test_drops_fine_tune_deadline_is_the_plans_time_of_the_stages_before_it_and_its_own_first_parts():
    from pipeline.recipes.build import fine_tune_deadline

    phases = {"table": 100.0, "selection": 200.0, "fine_tune": 50.0, "final_timing": 30.0}
    plan = {
        "stages": [
            {"name": "synthesize", "planned_s": 40.0},
            {"name": "drop", "planned_s": 380.0, "phases_s": phases},
            {"name": "export", "planned_s": 10.0},
        ]
    }
    assert fine_tune_deadline(plan, "drop", 1000.0) == 1000.0 + 40.0 + 350.0
    assert fine_tune_deadline(plan, "export", 1000.0) is None and fine_tune_deadline(None, "drop", 0.0) is None
    unknown = {"stages": [{"name": "synthesize", "planned_s": None}, plan["stages"][1]]}
    assert fine_tune_deadline(unknown, "drop", 0.0) is None  # an unestimated stage before it: nothing to keep


def test_the_validation_split_is_the_last_ten_thousand_training_images():
    from pipeline.data import fashion_mnist
    from pipeline.data.datasets import load_eval_dataset
    from pipeline.preprocess import default_preprocess

    if not fashion_mnist.is_available():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    images, labels = fashion_mnist.load_split("train")
    validation = load_eval_dataset("fmnist-val", default_preprocess(1, 28, 28), limit=500)
    assert validation.name == "fashion-mnist-validation" and len(validation.labels) == 500
    assert torch.equal(validation.labels, torch.from_numpy(labels[-10_000:][:500].copy()))


def test_binary_weight_kd_ends_at_the_budgets_seconds_unless_steps_bound_the_run():
    from pipeline.recipes.options import BuildOptions
    from pipeline.recipes.plan import choose_recipe
    from pipeline.recipes.stage_specs import quantize_config
    from pipeline.targets import load_target
    from pipeline.teacher_spec import TeacherSpec

    options, target, quick = BuildOptions(precision="binary", eval="none"), load_target("cpu"), get_budget("quick")
    recipe = choose_recipe(options, target)
    config = quantize_config(recipe, options, target, quick, None, TeacherSpec())
    assert config.binary_training.seconds == quick.binary_seconds == 600
    assert config.binary_training.iterations == quick.binary_iterations
    stepped = quantize_config(recipe, replace(options, steps=5), target, quick, None, TeacherSpec())
    assert stepped.binary_training.seconds is None  # reproducible: by iterations alone
    assert get_budget("28m").binary_seconds == 2 * quick.binary_seconds  # twice quick's data-free training


def test_the_search_bounds_its_probes_and_each_fine_tune_by_drop_seconds_unless_steps(tmp_path):
    """The search fine-tuned every short-listed candidate for drop_iterations (2,000 at quick: hours at 224 px)
    and probed the whole PRACTISE order without a time allowance; now drop's seconds bound both."""
    from pipeline.recipes.context import prepare
    from pipeline.recipes.drop_specs import PROBE_SHARE, search_stage
    from pipeline.recipes.options import BuildOptions
    from pipeline.search.candidate_models import FINE_TUNES_PER_BASE

    options = BuildOptions(recipe="search", latency_reduction=0.3, budget="smoke", eval="none", out=tmp_path / "r")
    stage = search_stage(replace(prepare(options), planning=True))
    smoke = get_budget("smoke")
    assert stage.config.recoverability.seconds == PROBE_SHARE * smoke.drop_seconds
    assert stage.config.fine_tune_seconds == (1 - PROBE_SHARE) * smoke.drop_seconds
    each = stage._recovery("teacher")
    assert each.seconds == round(stage.config.fine_tune_seconds / FINE_TUNES_PER_BASE, 1) > 0
    assert each.iterations == stage.config.recovery.iterations  # whichever ends first
    # a short list with more block sets than usual shares the same seconds among them all (the resnet20 jetson
    # build fine-tuned 4 per base at a third of them each, and its search ran 866 s)
    stage.fine_tunes = {"teacher": 5, "student": 2}
    assert stage._recovery("teacher").seconds == round(stage.config.fine_tune_seconds / 5, 1)
    assert stage._recovery("student").seconds == each.seconds
    stepped = search_stage(replace(prepare(replace(options, steps=4)), planning=True))
    assert stepped.config.recoverability.seconds is None and stepped.config.fine_tune_seconds is None
    assert stepped._recovery("teacher") == stepped.config.recovery
