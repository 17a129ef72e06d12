"""The factories of the stages that time and drop blocks (drop, search) and the interleaved latency settings
inside stages; split from stage_specs.py, which holds the others and the STAGE_FACTORIES table."""

from dataclasses import replace

from pipeline.budgets import Budget
from pipeline.drop.recoverability import RecoverabilitySettings
from pipeline.drop.select import LatencyBudget
from pipeline.drop.stage import DropConfig, DropStage
from pipeline.errors import PipelineError
from pipeline.kd import FeatureKDSettings
from pipeline.measure import LatencySettings, latency_source, target_latency_settings
from pipeline.recipes.memory import drop_batch_for
from pipeline.recipes.options import BuildContext, BuildOptions
from pipeline.recipes.resolve import build_settings, latency_budget_setting
from pipeline.search.stage import SEARCHABLE_PRECISIONS, SearchConfig, SearchStage
from pipeline.targets import Target
from pipeline.teacher_spec import TeacherSpec


def target_latency(target: Target, budget: Budget, rounds: int) -> LatencySettings:
    """Interleaved comparisons inside a stage (drop's candidates, quantize's formats): the target's runtime,
    batch and threads, here, on its host, or by proxy; many short rounds (the budget may only lower the
    target's run counts)."""
    return target_latency_settings(
        target,
        warmup=min(target.bench.warmup, budget.bench_warmup),
        runs=min(target.bench.runs, budget.drop_latency_runs),
        rounds=rounds,
        max_seconds=0.5,
    )


def drop_stage(ctx: BuildContext) -> DropStage:
    options, budget, target = ctx.options, ctx.budget, ctx.target
    reduction = latency_ms = None
    if options.drop_blocks is None:
        latency_budget = drop_budget(options, target, ctx.recipe.default_reduction)
        reduction, latency_ms = latency_budget.reduction, latency_budget.ms
    latency = target_latency(target, budget, budget.drop_latency_rounds)
    batch = drop_batch_for(ctx)[0]
    recovery = drop_recovery(options, budget, target, batch)
    from_teacher = not ctx.recipe.trains_a_student
    model = ctx.teacher_path if from_teacher else ctx.artifact("distill", "student")
    transfer_set = None
    if options.images is None:
        transfer_set = ctx.artifact("synthesize" if from_teacher else "distill", "transfer_set")
    return DropStage(
        model,
        transfer_set,
        DropConfig(
            target=target.name,
            latency=latency,
            reduction=reduction,
            latency_ms=latency_ms,
            recoverability=drop_probe_settings(options, budget, batch),
            recovery=recovery,
            images=options.images,
            per_class=options.per_class,
            seed=options.seed,
            device=options.device,
            blocks=options.drop_blocks,
            model=ctx.spec if from_teacher else TeacherSpec(),
        ),
        cache_dir=ctx.run.root / "cache",
        fine_tune_deadline=ctx.fine_tune_deadline,
    )


PROBE_SHARE = 0.25  # of the drop stage's seconds: the recoverability probes; the recovery fine-tune has the rest


def _recovery(options: BuildOptions, budget, target: Target, batch: int) -> FeatureKDSettings:
    settings = build_settings(options, budget, target)
    return FeatureKDSettings(
        iterations=settings["drop_iterations"].value, lr=settings["drop_lr"].value, batch_size=batch
    )


def drop_probe_settings(options: BuildOptions, budget: Budget, batch: int) -> RecoverabilitySettings:
    seconds = None if options.steps is not None else PROBE_SHARE * budget.drop_seconds
    return RecoverabilitySettings(steps=budget.drop_adapter_steps, seconds=seconds, batch_size=batch)


def drop_recovery(options: BuildOptions, budget: Budget, target: Target, batch: int) -> FeatureKDSettings:
    """The drop stage's fine-tune: its iterations, its batch (recipes/memory.py: what fits the memory limit),
    and its share of the budget's seconds unless `--steps`."""
    return replace(_recovery(options, budget, target, batch), seconds=_fine_tune_seconds(options, budget))


def _fine_tune_seconds(options: BuildOptions, budget: Budget) -> float | None:
    return None if options.steps is not None else (1 - PROBE_SHARE) * budget.drop_seconds


def drop_budget(options: BuildOptions, target: Target, default_reduction: float | None = None) -> LatencyBudget:
    """--latency-reduction or --latency-ms, else the target's latency_budget_ms or latency_reduction. A budget
    in milliseconds is a device figure: a proxy measurement cannot check it, so it needs the device (--host)."""
    given = latency_budget_setting(options, target).value
    if given is None and default_reduction is not None:  # the recipe's own aim (a build compressing its teacher)
        given = {"reduction": default_reduction, "ms": None}
    if given is None:
        raise PipelineError(
            "block dropping needs a latency budget: --latency-reduction 0.3 or --latency-ms 1.5 "
            f"(or latency_budget_ms / latency_reduction in the {target.name} target)"
        )
    budget = LatencyBudget(given["reduction"], given["ms"])
    source, why = latency_source(target)
    if budget.ms is not None and source == "proxy":
        raise PipelineError(
            f"a {budget.ms} ms budget is a {target.name} figure, and latency can only be measured by "
            f"proxy here ({why}): give --host user@device, or a relative budget (--latency-reduction)"
        )
    return budget


def search_stage(ctx: BuildContext) -> SearchStage:
    options, budget, target = ctx.options, ctx.budget, ctx.target
    latency_budget = drop_budget(options, target)
    allowed = (options.precision,) if options.precision else target.allowed_precisions
    precisions = tuple(p for p in allowed if p in SEARCHABLE_PRECISIONS)
    if not precisions:
        raise PipelineError(
            f"the budget search covers {', '.join(SEARCHABLE_PRECISIONS)}; {target.name} allows only "
            f"{', '.join(allowed)}"
        )
    student = ctx.artifact("distill", "student") if ctx.recipe.trains_a_student else None
    batch = drop_batch_for(ctx, teacher=True)[0]  # the teacher's: the larger of the models it drops blocks from
    recovery = _recovery(options, budget, target, batch)
    return SearchStage(
        ctx.teacher_path,
        student,
        ctx.artifact("distill" if student else "synthesize", "transfer_set"),
        SearchConfig(
            target=target.name,
            latency=target_latency(target, budget, budget.drop_latency_rounds),
            reduction=latency_budget.reduction,
            latency_ms=latency_budget.ms,
            precisions=precisions,
            # drop's seconds, split as drop splits them, for each base model's probes and its fine-tunes
            recoverability=drop_probe_settings(options, budget, batch),
            recovery=recovery,
            fine_tune_seconds=_fine_tune_seconds(options, budget),
            calib_images=options.calib_images,
            speedup_rounds=budget.quantize_latency_rounds,
            eval=ctx.eval,
            eval_limit=budget.eval_limit,
            seed=options.seed,
            device=options.device,
            teacher=ctx.spec,
        ),
        cache_dir=ctx.run.root / "cache",
    )
