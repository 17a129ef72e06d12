"""The plan before the work (issue 22 item 1, first part): unit costs measured on this machine for this teacher
and student, each stage planned from them and its config, the plan printed and kept beside the actual."""

import json
from dataclasses import replace

import pytest
import torch

from pipeline.assets import resolve_teacher
from pipeline.models.load import load_model
from pipeline.recipes.costs import UnitCosts, measure_unit_costs, plan_stages
from pipeline.recipes.plan_report import actual_stages, describe_plan
from pipeline.synthesize.base import resolve_options
from tests.conftest import invoke_cli


def _costs(**given) -> UnitCosts:
    values = {
        "synthesis_step_s": 0.5,
        "kd_step_s": 0.1,
        "export_s": 2.0,
        "latency_ms": 4.0,
        "forward_ms_per_image": 1.0,
        "synthesis_batch": 64,
        "kd_batch": 64,
        "synthesis_timed_batch": 64,
        "kd_timed_batch": 64,
        "drop_step_s": 0.2,
        "drop_timed_batch": 64,
        "probe_s": 1.0,
        "cpu": "test CPU",
    }
    return UnitCosts(**{**values, **given})


@pytest.mark.parametrize("synthesizer", ["bn-inversion", "dafl"])
def test_unit_costs_are_measured_on_this_machine_for_this_teacher(synthesizer):
    teacher = load_model(resolve_teacher("embedded:lenet5-fmnist"))
    before = {name: tensor.clone() for name, tensor in teacher.model.state_dict().items()}
    options = {**resolve_options(synthesizer), "batch_size": 16}
    costs = measure_unit_costs(teacher, "lenet5-half", synthesizer, options, 16, torch.device("cpu"))
    assert costs.synthesis_step_s > 0 and costs.kd_step_s > 0 and costs.export_s > 0 and costs.latency_ms > 0
    assert costs.synthesis_timed_batch == 16 and costs.kd_timed_batch == 16  # cheap: timed at the real batch
    assert costs.probe_s < 30 and costs.cpu and costs.ort_ms_per_image > 0  # onnxruntime in batches, per image
    after = teacher.model.state_dict()  # the probe works on a copy: the teacher is untouched
    assert all(torch.equal(before[name], after[name]) for name in before)
    nothing = measure_unit_costs(teacher, None, None, options, 16, torch.device("cpu"))
    assert nothing.synthesis_step_s == 0 and nothing.kd_step_s == 0 and nothing.synthesis_timed_batch is None


def test_each_stage_is_planned_from_its_config_and_the_unit_costs():
    stages = [
        ("synthesize", {"seconds": 10.0, "steps": None}),
        ("distill", {"seconds": 60.0, "steps": None, "training": {"kd_steps": 4}, "continue_synthesis": True}),
        ("search", {}),
        ("export", {}),
        ("bench", {"latency": {"rounds": 20, "warmup": 2, "runs": 8}, "eval": "fmnist"}),
    ]
    plan = plan_stages(stages, _costs(), eval_images=1000)
    planned = {stage["name"]: stage for stage in plan["stages"]}
    assert planned["synthesize"]["steps"] == 20 and planned["synthesize"]["planned_s"] == pytest.approx(10.0)
    assert planned["distill"]["unit_s"] == pytest.approx(0.9)  # one synthesis step and 4 KD steps
    assert planned["distill"]["steps"] == 67 and planned["distill"]["planned_s"] == pytest.approx(60.3)
    assert planned["search"]["planned_s"] is None and plan["unplanned"] == ["search"]
    # 2 models x torch.export: its fixed seconds and 5.5x the probe's TorchScript export
    assert planned["export"]["planned_s"] == 2 * (3.5 + 5.5 * 2.0)
    assert planned["bench"]["planned_s"] == pytest.approx(2 * 20 * 10 * 0.004 + 2 * 1000 * 0.001)
    assert plan["planned_s"] == pytest.approx(10.0 + 60.3 + 29.0 + 3.6, abs=0.2) and plan["cpu"] == "test CPU"
    lines = describe_plan(plan)
    assert lines[-1].startswith("plan: ETA 1 min 43 s + search (not estimated yet)") and "test CPU" in lines[-1]


def test_a_step_dearer_than_its_budget_is_planned_and_said_and_steps_bound_a_reproducible_run():
    plan = plan_stages([("synthesize", {"seconds": 5.0, "steps": None})], _costs(synthesis_step_s=50.0), None)
    stage = plan["stages"][0]
    assert stage["steps"] == 1 and stage["planned_s"] == 50.0 and "more than the stage's 5 s budget" in stage["note"]
    fixed = plan_stages([("synthesize", {"seconds": 5.0, "steps": 7})], _costs(), None)["stages"][0]
    assert fixed["steps"] == 7 and fixed["planned_s"] == pytest.approx(3.5)


def test_the_actual_follows_the_plan_stage_by_stage():
    plan = plan_stages([("synthesize", {"seconds": 5.0}), ("export", {})], _costs(), None)
    manifest = {
        "stages": {
            "synthesize": {"wall_s": 5.2, "metrics": {"steps": 11}, "peak_rss_mb": 900.0},
            "export": {"wall_s": 1.5, "peak_rss_mb": 1200.5},
        }
    }
    actual = actual_stages(manifest, plan)
    assert actual["stages"] == [
        {"name": "synthesize", "steps": 11, "wall_s": 5.2, "peak_rss_mb": 900.0},
        {"name": "export", "steps": None, "wall_s": 1.5, "peak_rss_mb": 1200.5},
    ]
    assert actual["wall_s"] == 6.7 and actual["cpu"] == "test CPU" and actual["peak_rss_mb"] == 1200.5


def test_plan_shows_the_measured_costs_and_runs_nothing(tmp_path):
    run = tmp_path / "run"
    planned = invoke_cli("build", "--budget", "smoke", "--out", str(run), "--eval", "none", "--plan", "--json")
    assert planned.returncode == 0, planned.stderr
    cost_plan = json.loads(planned.stdout)["cost_plan"]
    assert [stage["name"] for stage in cost_plan["stages"]] == ["synthesize", "distill", "export", "bench"]
    assert all(stage["planned_s"] > 0 for stage in cost_plan["stages"][:2])  # a 28-px bench is planned at ~0 s
    assert cost_plan["stages"][3]["planned_s"] is not None and cost_plan["unit_costs"]["latency_ms"] > 0
    assert not run.exists()  # planning writes nothing


def test_block_dropping_is_planned_from_its_table_selection_and_fine_tune():
    latency = {"rounds": 50, "warmup": 20, "runs": 100, "max_seconds": 0.5, "source": "local"}
    probing = {"steps": 60, "eval_images": 256}
    config = {"latency": latency, "reduction": 0.3, "recoverability": probing, "recovery": {"iterations": 2000}}
    costs = _costs(latency_ms=20.0, export_s=3.0)  # a 224-px model: 25 timed runs fill a 0.5 s round
    stage = plan_stages([("drop", config)], costs, None, {"blocks": 16, "classes": 7})["stages"][0]
    short, full = (3 + 25) * 0.02, (20 + 25) * 0.02  # one variant's round, with 3 or 20 warm-up calls
    table = 8 * (20 * short + 3.0)
    to_drop = 6  # 30 % of 16 blocks, as if each saved an equal share of 18 parts
    probes = (16 + 15 + 14 + 13 + 12 + 11) * (60 * 0.2 + 256 * 0.001)  # adapter steps and a held-back pass each
    # one later step's 9 models x 20 rounds fits the selection's 120 s timing share (then the table stands in);
    # the check, planned twice: two models, 20 rounds and more while its 30 s share lasts (26)
    selection = probes + 9 * 20 * short + 2 * 2 * 26 * short
    final = 33 * 2 * full  # 20 rounds at least, then more while its 60 s share lasts
    expected = table + selection + 2000 * 0.2 + final
    assert stage["planned_s"] == pytest.approx(expected, abs=0.1) and stage["steps"] == 2000
    assert f"~{to_drop} blocks" in stage["unit"] and stage["elastic_s"] == 0  # nothing bounded by seconds
    phases = stage["phases_s"]  # the parts, each as planned: the stage's measured phase_s sits beside them
    assert phases["table"] == pytest.approx(table, abs=0.1) and phases["selection"] == pytest.approx(selection, abs=0.1)
    assert phases["fine_tune"] == pytest.approx(400.0) and phases["final_timing"] == pytest.approx(final, abs=0.1)
    assert sum(phases.values()) == pytest.approx(stage["planned_s"], abs=0.2)
    named = plan_stages([("drop", {**config, "blocks": ["layer1.0"]})], costs, None, {"blocks": 16, "classes": 7})
    assert named["stages"][0]["planned_s"] == pytest.approx(2000 * 0.2 + final, abs=0.1)  # no table
    assert plan_stages([("drop", config)], costs, None, None)["stages"][0]["planned_s"] is None  # nothing known
    # a time-bounded drop (the budget's seconds): the probes and the fine-tune end at their shares
    bounded = {
        **config,
        "recoverability": {**probing, "seconds": 90.0},
        "recovery": {"iterations": 2000, "seconds": 270.0},
    }
    timed = plan_stages([("drop", bounded)], costs, None, {"blocks": 16, "classes": 7})["stages"][0]
    assert timed["steps"] == 1350 and timed["elastic_s"] == pytest.approx(90.0 + 270.0)
    sizing = 2 * 0.2  # two adapter steps timed to spread the probes' seconds
    assert timed["planned_s"] == pytest.approx(expected - probes + 90.0 + sizing - 2000 * 0.2 + 270.0, abs=0.1)
    # a pool this plan's synthesize makes (3 steps of 64 images): the probes hold back a fifth of it, 38 images
    synthesize = ("synthesize", {"seconds": 1.5, "steps": None})
    pooled = plan_stages([synthesize, ("drop", config)], costs, None, {"blocks": 16, "classes": 7})["stages"][1]
    pooled_probes = (16 + 15 + 14 + 13 + 12 + 11) * (60 * 0.2 + 38 * 0.001)
    assert pooled["phases_s"]["selection"] == pytest.approx(selection - probes + pooled_probes, abs=0.1)
    # a starved probe keeps a pass over its fewest held-back images, never more than the pool holds back (12)
    starved = {**config, "recoverability": {**probing, "seconds": 0.01}}
    one_step = ("synthesize", {"seconds": 0.5, "steps": None})
    alone, after = (
        plan_stages(stages, costs, None, {"blocks": 16, "classes": 7})["stages"][-1]["phases_s"]["selection"]
        for stages in ([("drop", starved)], [one_step, ("drop", starved)])
    )
    assert alone - after == pytest.approx(81 * (32 - 12) * 0.001, abs=0.1)
    fp16 = {"precision": "fp16", "calib_images": 512, "eval": None}
    quantize = plan_stages([synthesize, ("quantize", fp16)], costs, None)["stages"][1]  # half the pool held back
    assert quantize["planned_s"] == pytest.approx(3.0 + 2 * 96 * 0.02, abs=0.1)


def test_a_resumed_run_reuses_the_costs_it_measured_and_a_finished_one_probes_nothing(tmp_path):
    from pipeline.recipes.build import run_build
    from pipeline.recipes.options import BuildOptions

    options = BuildOptions(teacher="embedded:lenet5-fmnist", budget="smoke", steps=2, out=tmp_path / "run", eval="none")
    run_build(options, until="synthesize")
    first = json.loads((tmp_path / "run" / "manifest.json").read_text())["plan"]
    assert first["unit_costs"]["probe_s"] > 0 and [s["name"] for s in first["stages"]] == ["synthesize"]
    run_build(replace(options, force=True), until="synthesize")  # the same build again, on the same machine
    again = json.loads((tmp_path / "run" / "manifest.json").read_text())["plan"]
    assert again["unit_costs"] == {**first["unit_costs"], "probe_s": 0.0} and again["probe"] == first["probe"]
    run_build(options, until="synthesize")  # up to date: nothing left to plan
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["plan"]["stages"] == []


def _search_config(**given) -> dict:
    latency = {"rounds": 50, "warmup": 20, "runs": 100, "max_seconds": 0.5, "source": "local", "runtime": "onnxruntime"}
    config = {
        "latency": latency,
        "precisions": ["fp32", "fp16", "int8"],
        "recoverability": {"steps": 60, "eval_images": 256, "seconds": 90.0},
        "recovery": {"iterations": 2000},
        "fine_tune_seconds": 270.0,
        "held_out": 2048,
        "calib_images": 512,
        "speedup_rounds": 20,
        "eval": None,
    }
    return {**config, **given}


def test_the_search_is_planned_per_base_with_its_probes_and_fine_tunes_as_the_elastic_part():
    """The resnet20 jetson build ran a search the plan left out (866 s against a 14 min ETA): now it is planned,
    its probes and fine-tunes bounded by their seconds per base, so a tight budget can scale them."""
    from pipeline.recipes.search_cost import PLANNED_FINE_TUNES

    costs = _costs(drop_step_s=0.1, latency_ms=0.5, export_s=0.2, forward_ms_per_image=0.05)
    bases = {"teacher": {"blocks": 9, "classes": 5}, "student": {"blocks": 6, "classes": 5}}
    stage = plan_stages([("search", _search_config())], costs, None, searchable=bases)["stages"][0]
    # 2000 iterations at 0.1 s a step, 4 block sets a base, are 800 s: each base keeps to its 270 s; 45 and 21
    # probes of 60 adapter steps (6 s each) keep to their 90 s
    assert stage["elastic_s"] == pytest.approx(2 * (90 + 270))
    assert stage["steps"] == 2 * 8 and stage["planned_s"] > stage["elastic_s"]  # ceil(2.5 x 3) candidates a base
    assert stage["phases_s"]["candidates"] >= 2 * 270 and stage["phases_s"]["bases"] >= 2 * 90
    one = plan_stages([("search", _search_config())], costs, None, searchable={"teacher": bases["teacher"]})
    assert one["stages"][0]["elastic_s"] == pytest.approx(90 + 270) and one["unplanned"] == []
    # by steps (--steps lifts the seconds): every fine-tune's iterations, every probe's adapter steps
    stepped = _search_config(fine_tune_seconds=None, recoverability={"steps": 60, "eval_images": 256})
    by_steps = plan_stages([("search", stepped)], costs, None, searchable={"teacher": bases["teacher"]})["stages"][0]
    probes = 45 * (60 * 0.1 + 256 * 0.05 / 1000)
    assert by_steps["elastic_s"] == pytest.approx(probes + PLANNED_FINE_TUNES * 2000 * 0.1, abs=0.1)
    # with a labelled set, each candidate's accuracy is measured too (for calibration)
    labelled = plan_stages([("search", _search_config(eval="fmnist"))], costs, 10000, searchable=bases)["stages"][0]
    assert labelled["phases_s"]["calibration"] == pytest.approx(16 * 10000 * 0.05 / 1000)


def test_a_build_with_a_search_plans_it_and_fits_its_seconds_into_the_budget(tmp_path):
    planned = invoke_cli(
        "build",
        "--budget",
        "smoke",
        "--target",
        "jetson",
        "--latency-reduction",
        "0.3",
        "--out",
        str(tmp_path / "run"),
        "--eval",
        "none",
        "--plan",
        "--json",
    )
    assert planned.returncode == 0, planned.stderr
    cost_plan = json.loads(planned.stdout)["cost_plan"]
    search = next(stage for stage in cost_plan["stages"] if stage["name"] == "search")
    assert search["planned_s"] > 0 and search["elastic_s"] > 0 and "search" not in cost_plan["unplanned"]
