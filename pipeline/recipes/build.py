"""`pipeline build` and the commands built on it: the stages in order in one run folder."""

import json
import time
from contextlib import nullcontext
from dataclasses import replace

from pipeline.budgets import Budget
from pipeline.errors import PipelineError
from pipeline.measure.settings import cpu_model
from pipeline.progress import log
from pipeline.recipes.context import check_droppable, model_to_drop, prepare
from pipeline.recipes.costs import UnitCosts, measure_unit_costs, nothing_to_plan, plan_stages
from pipeline.recipes.deliver import compress_instead, may_compress_instead
from pipeline.recipes.drop_specs import drop_budget
from pipeline.recipes.fit import fit_to_budget
from pipeline.recipes.memory import DROP_BATCH, drop_batch_for
from pipeline.recipes.options import STAGE_ORDER, BuildOptions, describe_input
from pipeline.recipes.plan import QUANTISED, applies, handed_on_precision, recipe_steps
from pipeline.recipes.plan_report import actual_stages, describe_plan
from pipeline.recipes.resolve import build_settings
from pipeline.recipes.stage_specs import STAGE_FACTORIES, student_training, synthesizer_options
from pipeline.run_view import summarize

DATA_PARALLEL_STAGES = ("synthesize", "distill")
FASHION_MNIST_TEST_IMAGES = 10_000  # an accuracy pass over an image folder is planned at this size too


def run_build(options: BuildOptions, *, until: str = "bench") -> dict:
    """Run the stages up to and including `until`; finished, unchanged stages are skipped.

    Under torchrun every rank runs synthesize and distill together; then the other ranks leave and rank 0
    exports and measures alone (a second process would distort the latency figures)."""
    from pipeline import distributed

    if until not in STAGE_ORDER:
        raise PipelineError(f"unknown stage {until!r}")
    distributed.init(distributed.local_device(options.device))
    ctx = prepare(replace(options, until=until))
    with ctx.run.lock() if distributed.is_main() else nullcontext():  # torchrun's other ranks share rank 0's folder
        ctx.run.reload()  # what a process that held the folder before us wrote
        ctx.run.set_run_info(
            command=options.command,
            recipe=ctx.recipe.name,
            teacher=str(ctx.teacher_path),
            teacher_arch=ctx.teacher.arch,
            teacher_name=ctx.teacher.name,
            teacher_format=ctx.teacher.source_format,
            target=ctx.target.to_dict(),
            budget=ctx.budget.to_dict(),
            preprocess=ctx.teacher.preprocess.to_dict(),
            preprocess_source=ctx.teacher.preprocess_source,  # recorded in the file, given or guessed
            num_classes=ctx.teacher.num_classes,
            eval=ctx.eval,
            world_size=distributed.world_size(),
            student_note=ctx.student_note,
            memory_note=ctx.memory_note,
            recipe_note=None,  # the planner's, below
            budget_note=None,
        )
        plan = None
        if distributed.is_main():  # the plan before the work: measured here, printed, kept beside the actual
            try:
                ctx, plan = settle_plan(ctx, until)
            except OSError as error:  # the probe writes a temporary ONNX file: a full disk is the stages' to report
                log(f"plan: not made ({error.strerror or error}); the stages run without one")
            else:
                for note in (ctx.recipe_note, ctx.budget_note):
                    if note:
                        log(f"plan: {note}")
                # None: the command's own recipe and budget; a compressed teacher trains no student to note
                ctx.run.set_run_info(
                    recipe=ctx.recipe.name,
                    recipe_note=ctx.recipe_note,
                    memory_note=ctx.memory_note,
                    budget=ctx.budget.to_dict(),
                    budget_note=ctx.budget_note,
                    student_note=ctx.student_note,
                )
                for line in describe_plan(plan):
                    log(line)
                ctx.run.set_run_info(plan=plan)
        stages_started = time.monotonic()
        for step in recipe_steps(ctx.recipe, until):
            # a condition is decided when its step is reached: the search chooses the precision quantize runs on
            if not applies(step, ctx.recipe, ctx.options, ctx.target, ctx.run):
                continue
            name = step.stage
            if name not in DATA_PARALLEL_STAGES and distributed.active():
                main = distributed.is_main()
                distributed.finish()
                if not main:
                    break
            deadline = fine_tune_deadline(plan, name, stages_started) if options.steps is None else None
            ctx.run.run(STAGE_FACTORIES[name](replace(ctx, fine_tune_deadline=deadline)), force=options.force)
        distributed.finish()
        if plan is not None:
            ctx.run.set_run_info(actual=actual_stages(ctx.run.manifest, plan))
        return summarize(ctx.run)


def fine_tune_deadline(plan: dict | None, stage: str, stages_started: float) -> float | None:
    """When drop's recovery fine-tune should end (`time.monotonic()`), by the plan: the planned seconds of the
    stages before it and of its own table, selection and fine-tune, from the moment the first stage started. A
    stage before it that ran late, or a table that needed more rounds, so shortens the fine-tune instead of the
    build overrunning its budget; a stage that ran early gives the fine-tune nothing more than its seconds."""
    if plan is None or stage != "drop":
        return None
    before = 0.0
    for planned in plan["stages"]:
        if planned["name"] == stage:
            phases = planned.get("phases_s")
            if not phases:
                return None
            return stages_started + before + phases["table"] + phases["selection"] + phases["fine_tune"]
        if planned.get("planned_s") is None:  # a stage the plan could not estimate: no deadline to keep
            return None
        before += planned["planned_s"]
    return None


def settle_plan(ctx, until: str):
    """The plan, and the context it is for: when the budget buys a student too few KD steps, the build
    compresses its teacher instead (recipes/deliver.py), planned from the same measured costs."""
    earlier = ctx.run.manifest.get("plan")
    plan = build_plan(ctx, until)
    measured = (plan["probe"], UnitCosts(**plan["unit_costs"])) if plan["stages"] else None
    switch = compress_instead(ctx, plan) if plan["stages"] else None
    if switch is not None:
        recipe, reason = switch
        check_droppable(recipe, ctx.options, ctx.teacher, ctx.teacher_path, None)
        drop_budget(ctx.options, ctx.target, recipe.default_reduction)
        ctx = replace(ctx, recipe=recipe, recipe_note=reason, student=None, student_note=None)
        plan = build_plan(ctx, until, measured=measured)

    def replan(budget: Budget) -> dict:  # the same measured costs, a scaled budget
        return build_plan(replace(ctx, budget=budget), until, measured=measured)

    fitted = fit_to_budget(ctx.budget, plan, earlier, replan if plan["stages"] else None)
    if fitted is not None:  # the time-bounded stages' seconds scaled to fit the whole build in its budget
        ctx = replace(ctx, budget=Budget(**fitted["budget"]), budget_note=fitted["note"])
        if plan["stages"]:
            plan = build_plan(ctx, until, measured=measured)
        plan = {**plan, "fitted": fitted, "probe": plan.get("probe") or (earlier or {}).get("probe")}
    return with_drop_memory_note(ctx, until), plan


def with_drop_memory_note(ctx, until: str):
    """The context with a note, logged once the recipe is settled, when drop runs and its batch was lowered."""
    if "drop" not in (step.stage for step in recipe_steps(ctx.recipe, until)):
        return ctx
    note = drop_batch_for(ctx)[1]
    if note is None:
        return ctx
    log(f"note: {note}")
    return replace(ctx, memory_note="; ".join(n for n in (ctx.memory_note, note) if n))


def build_plan(ctx, until: str, measured: "tuple[dict, UnitCosts] | None" = None) -> dict:
    """The stages still to run, each planned from unit costs measured now on this machine (recipes/costs.py);
    `measured`: the probe and costs of a plan made a moment ago for the same build (a switched recipe)."""
    from pipeline import distributed

    planning = replace(ctx, planning=True)  # configs of later stages name inputs not made yet
    stages = []
    for step in recipe_steps(ctx.recipe, until):
        finished = (ctx.run.entry(step.stage) or {}).get("status") == "done" and not ctx.options.force
        if finished or not applies(step, ctx.recipe, ctx.options, ctx.target, ctx.run):
            continue
        stage = STAGE_FACTORIES[step.stage](planning)
        config = stage.config_dict()
        if step.stage == "export":  # a model exported before on this machine is copied, not exported
            config["cached_models"] = stage.cached_models()
        stages.append((step.stage, config))
    if not stages:
        return nothing_to_plan()
    names = {name for name, _ in stages}
    if measured is not None:  # the costs of the plan just made, for another recipe or budget of the same build
        probe, costs = measured
        eval_images = (ctx.budget.eval_limit or FASHION_MNIST_TEST_IMAGES) if ctx.eval else 0
        droppable = _drop_model(ctx)[1] if "drop" in names else None
        return {**plan_stages(stages, costs, eval_images, droppable, _searchable(ctx, names)), "probe": probe}
    # the teacher's fine-tune step too when the planner may compress it instead of distilling (deliver.py), or
    # when the search fine-tunes it (and a student, at most as dear)
    compressible = ("distill" in names and may_compress_instead(ctx)) or "search" in names
    drop_model, droppable = _drop_model(ctx, compressible) if "drop" in names or compressible else (None, None)
    device = distributed.local_device(ctx.options.device)
    probe = {
        "teacher": [str(ctx.teacher_path), ctx.teacher_path.stat().st_size, ctx.teacher_path.stat().st_mtime_ns],
        "student": ctx.student if names & {"distill"} else None,
        "synthesizer": ctx.options.synthesizer if names & {"synthesize", "distill"} else None,
        "synthesis_options": synthesizer_options(ctx.options, ctx.budget),
        "kd_batch": student_training(ctx.options, ctx.budget).batch_size,
        "device": str(device),
        "drop": droppable is not None,
        "drop_batch": drop_batch_for(ctx, compressible)[0] if droppable is not None else None,
        "input_shape": list(ctx.teacher.input_shape),
        "cpu": cpu_model(),
    }
    probe = json.loads(json.dumps(probe))  # as the manifest keeps it (tuples become lists)
    # what the costs were measured for: a resumed run of the same build on this machine reuses them
    earlier = ctx.run.manifest.get("plan") or {}
    if earlier.get("probe") == probe and earlier.get("unit_costs"):  # a resumed run: the costs measured before
        costs = UnitCosts(**{**earlier["unit_costs"], "probe_s": 0.0})
    else:
        costs = measure_unit_costs(
            ctx.teacher,
            probe["student"],
            probe["synthesizer"],
            probe["synthesis_options"],
            probe["kd_batch"],
            device,
            drop_model,
            probe["drop_batch"] or DROP_BATCH,
        )
    eval_images = (ctx.budget.eval_limit or FASHION_MNIST_TEST_IMAGES) if ctx.eval else 0
    return {**plan_stages(stages, costs, eval_images, droppable, _searchable(ctx, names)), "probe": probe}


def _searchable(ctx, names: set) -> dict | None:
    """The search's base models, each with its count of droppable blocks and block classes: the teacher, and the
    student when the recipe trains one (its architecture at the teacher's input, as drop plans it)."""
    if "search" not in names:
        return None
    bases = {"teacher": _drop_model(ctx, teacher=True)[1]}
    if ctx.recipe.trains_a_student:
        bases["student"] = _drop_model(ctx)[1]
    return bases


def _drop_model(ctx, teacher: bool = False):
    """The model block dropping will work on (context.model_to_drop; `teacher`: the teacher itself), and its
    count of droppable blocks and of block classes (the latency table's variants)."""
    from pipeline.drop.blocks import droppable_blocks
    from pipeline.drop.latency_table import block_classes

    model = (ctx.teacher.model if teacher else model_to_drop(ctx.recipe, ctx.teacher, ctx.student)).eval()
    blocks = droppable_blocks(model)
    classes = block_classes(model, blocks, ctx.teacher.input_shape)
    return model, {"blocks": len(blocks), "classes": len(set(classes.values()))}


def plan_build(options: BuildOptions, *, until: str = "bench") -> dict:
    """What `run_build` would do, resolved and validated but not run (`--plan`): the settings after defaults,
    budget and target are applied, and each stage with its named inputs and its config, from the same stage
    factories the run uses. Which stages are already finished in the run folder is shown; none is checked
    for being up to date (that needs their inputs' hashes)."""
    ctx = replace(prepare(replace(options, until=until)), planning=True)
    ctx, cost_plan = settle_plan(ctx, until)
    stages = []
    search_finished = (ctx.run.entry("search") or {}).get("status") == "done"
    search_to_decide = "search" in ctx.recipe.stages and not search_finished  # quantize waits on its choice
    for step in recipe_steps(ctx.recipe, until):
        name = step.stage
        # the run folder as it is: a finished search has decided the precision, as the stage factories read it
        if not applies(step, ctx.recipe, ctx.options, ctx.target, ctx.run):
            if step.when == QUANTISED and search_to_decide:
                stages.append({"stage": name, "inputs": {}, "config": {}, "finished": False, "when": step.when})
            continue
        stage = STAGE_FACTORIES[name](ctx)
        inputs = {key: describe_input(path) for key, path in stage.inputs().items()}
        entry = ctx.run.entry(name) or {}
        stages.append(
            {"stage": name, "inputs": inputs, "config": stage.config_dict(), "finished": entry.get("status") == "done"}
        )
    if ctx.run.created and not any(ctx.run.root.iterdir()):
        ctx.run.root.rmdir()  # planning writes nothing
    return {
        "run_folder": str(ctx.run.root),
        "teacher": str(ctx.teacher_path),
        "arch": ctx.teacher.name,
        "target": ctx.target.name,
        "runtime": ctx.target.runtime,
        "budget": ctx.budget.name,
        "recipe": ctx.recipe.name,
        "precision": (
            "chosen by the search"
            if search_to_decide
            else handed_on_precision(ctx.recipe, ctx.options, ctx.target, ctx.run)
        ),
        # every setting a default, the budget, the target file and a flag can each give, and which one did
        "settings": {
            name: setting.to_dict() for name, setting in build_settings(ctx.options, ctx.budget, ctx.target).items()
        },
        "synthesizer": ctx.options.synthesizer,
        "student": ctx.student,
        "student_note": ctx.student_note,
        "memory_note": ctx.memory_note,
        "eval": ctx.eval,
        "cost_plan": cost_plan,
        "recipe_note": ctx.recipe_note,
        "budget_note": ctx.budget_note,
        "preprocess": {**ctx.teacher.preprocess.to_dict(), "source": ctx.teacher.preprocess_source},
        "stages": stages,
    }
