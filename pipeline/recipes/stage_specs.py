"""One factory per stage: the stage's inputs (named artifacts of earlier stages) and its config, from the
build's settings, the target and the budget. The only place a stage config is assembled for a build (with
drop_specs.py, which holds drop's and the search's)."""

from dataclasses import replace
from pathlib import Path

from pipeline.bench.stage import BENCH_ROUNDS, BenchConfig, BenchStage
from pipeline.budgets import Budget
from pipeline.distill.stage import DistillConfig, DistillStage
from pipeline.engine.stage import EngineConfig, EngineStage
from pipeline.errors import PipelineError
from pipeline.export.stage import ExportConfig, ExportStage
from pipeline.kd import FeatureKDSettings
from pipeline.measure import measurement_options, spread_over_rounds, target_latency_settings
from pipeline.preprocess import Preprocess
from pipeline.quantize.int8 import Int8Settings
from pipeline.quantize.stage import QuantizeConfig, QuantizeStage
from pipeline.recipes.drop_specs import drop_stage, search_stage, target_latency
from pipeline.recipes.options import BuildContext, BuildOptions
from pipeline.recipes.plan import Recipe, handed_on_precision, precision, stages_to_run
from pipeline.recipes.resolve import build_settings
from pipeline.synthesize import StudentTraining, resolve_options
from pipeline.synthesize.stage import SynthesizeConfig, SynthesizeStage
from pipeline.targets import Target
from pipeline.teacher_spec import TeacherSpec


def bench_config(
    target: Target, budget: Budget, preprocess: Preprocess, eval_spec: str | None, seed: int = 0
) -> BenchConfig:
    """The target says what to measure and where; the budget may only lower the number of timed runs."""
    latency = spread_over_rounds(
        target_latency_settings(target),
        warmup=min(target.bench.warmup, budget.bench_warmup),
        runs=min(target.bench.runs, budget.bench_runs),
        rounds=BENCH_ROUNDS,
    )
    return BenchConfig(
        latency=latency, preprocess=preprocess.to_dict(), eval=eval_spec, eval_limit=budget.eval_limit, seed=seed
    )


def synthesizer_options(options: BuildOptions, budget: Budget) -> dict:
    """Method defaults <- preset <- the budget's batch size (unless the preset sets its own) <- --synth-option."""
    name = options.synthesizer
    defaults, resolved = resolve_options(name), resolve_options(name, options.synth_preset)
    if "batch_size" in resolved and resolved["batch_size"] == defaults["batch_size"]:
        resolved["batch_size"] = budget.batch_size
    checked = resolve_options(name, None, options.synth_options)  # validates names, casts types
    resolved.update({key: checked[key] for key in options.synth_options})
    return resolved


def mix_options(options: BuildOptions, budget: Budget) -> dict | None:
    if not options.mix_images:
        return None
    return resolve_options(
        "images",
        None,
        {"path": options.mix_images, "per_class": options.mix_per_class, "batch_size": max(1, budget.batch_size // 4)},
    )


def student_training(options: BuildOptions, budget: Budget) -> StudentTraining:
    overrides = {
        name: value
        for name, value in (
            ("temperature", options.temperature),
            ("ema", options.ema),
            ("feature_weight", options.feature_weight),
            ("kd_steps", options.kd_steps),
            ("augment", options.augment),
            ("class_balance", options.class_balance),
        )
        if value is not None
    }
    return replace(StudentTraining(batch_size=budget.batch_size), **overrides)


def synthesis_seconds(recipe: Recipe, options: BuildOptions, target: Target, budget: Budget) -> float:
    """Longer when the transfer set itself is the training data and no distill stage continues the synthesis
    (drop's and the search's fine-tunes, binary KD; INT8 only calibrates on it)."""
    trains_on_it = recipe.command != "quantize" or precision(options, target) == "binary"
    standalone = not recipe.trains_a_student and trains_on_it
    return budget.standalone_synthesize_seconds if standalone else budget.synthesize_seconds


def training_steps(
    recipe: Recipe, options: BuildOptions, target: Target, budget: Budget
) -> tuple[int | None, int | None]:
    """--steps N: synthesize and distill share N steps in the proportion the budget shares its seconds
    (`pipeline synthesize`, or a synthesis with no distill after it, takes all N)."""
    if options.steps is None:
        return None, None
    seconds = synthesis_seconds(recipe, options, target, budget)
    if seconds != budget.synthesize_seconds or options.until == "synthesize":
        return options.steps, None
    synthesize = max(1, round(options.steps * seconds / (seconds + budget.distill_seconds)))
    return synthesize, max(1, options.steps - synthesize)


def synthesize_stage(ctx: BuildContext) -> SynthesizeStage:
    return SynthesizeStage(
        ctx.teacher_path,
        SynthesizeConfig(
            seconds=synthesis_seconds(ctx.recipe, ctx.options, ctx.target, ctx.budget),
            method=ctx.options.synthesizer,
            steps=training_steps(ctx.recipe, ctx.options, ctx.target, ctx.budget)[0],
            options=synthesizer_options(ctx.options, ctx.budget),
            seed=ctx.options.seed,
            device=ctx.options.device,
            mix=mix_options(ctx.options, ctx.budget),
            teacher=ctx.spec,
        ),
    )


def distill_stage(ctx: BuildContext) -> DistillStage:
    return DistillStage(
        ctx.teacher_path,
        ctx.artifact("synthesize", "transfer_set"),
        ctx.artifact("synthesize", "synthesizer"),
        DistillConfig(
            student=ctx.student,
            seconds=ctx.budget.distill_seconds,
            seed=ctx.options.seed,
            steps=training_steps(ctx.recipe, ctx.options, ctx.target, ctx.budget)[1],
            training=student_training(ctx.options, ctx.budget),
            eval=ctx.eval,
            eval_every_s=ctx.budget.curve_every_s,
            device=ctx.options.device,
            mix=mix_options(ctx.options, ctx.budget),
            teacher=ctx.spec,
        ),
    )


def handed_on_checkpoint(ctx: BuildContext) -> Path | None:
    """The PyTorch model the later stages work on; None when it is the teacher itself (`pipeline quantize`)."""
    source = ctx.recipe.model_from
    if source == "teacher":
        return None
    return ctx.artifact(source, "student" if source == "distill" else "model")


def export_stage(ctx: BuildContext) -> ExportStage:
    models = {"teacher": ctx.teacher_path}
    handed_on = handed_on_checkpoint(ctx)
    if handed_on is not None:
        models["student"] = handed_on
    return ExportStage(models, ExportConfig(eval=ctx.eval, seed=ctx.options.seed, specs={"teacher": ctx.spec}))


def quantize_config(
    recipe: Recipe,
    options: BuildOptions,
    target: Target,
    budget: Budget,
    eval_spec: str | None,
    model: TeacherSpec,
    wanted: str | None = None,
) -> QuantizeConfig | None:
    """None when the build hands on fp32; raises on bad quantisation options. `model`: how to load the
    checkpoint being quantised (the teacher's options when it is the teacher); `wanted`: the handed-on precision
    (default: the setting; after a budget search, its choice)."""
    wanted = wanted or precision(options, target)
    if wanted == "fp32":
        if recipe.command == "quantize":
            raise PipelineError("`pipeline quantize` needs --precision int8, fp16 or binary (the target says fp32)")
        return None
    if options.calib == "real" and not options.images:
        raise PipelineError("--calib real needs --images DIR (or fmnist-train): the unlabelled images to calibrate on")
    calib = options.calib
    if calib == "synthetic" and "synthesize" not in recipe.stages:
        calib = "real"  # few-shot `pipeline drop` made no transfer set: its real (unlabelled) images calibrate too
    latency = target_latency(target, budget, budget.quantize_latency_rounds)
    return QuantizeConfig(
        precision=wanted,
        runtime=target.runtime,
        latency=latency,
        calib=calib,
        int8=Int8Settings(method=options.calib_method),
        images=options.images,
        calib_images=options.calib_images,
        max_accuracy_drop=options.max_accuracy_drop,
        binary_training=FeatureKDSettings(
            iterations=build_settings(options, budget, target)["binary_iterations"].value,
            seconds=None if options.steps is not None else budget.binary_seconds,  # --steps: by iterations only
        ),
        binary_coverage=options.binary_coverage,
        eval=eval_spec,
        eval_limit=budget.eval_limit,
        seed=options.seed,
        model=model,
    )


def quantize_stage(ctx: BuildContext) -> QuantizeStage:
    options = ctx.options
    handed_on = handed_on_checkpoint(ctx)
    config = quantize_config(
        ctx.recipe,
        options,
        ctx.target,
        ctx.budget,
        ctx.eval,
        ctx.spec if handed_on is None else TeacherSpec(),
        handed_on_precision(ctx.recipe, options, ctx.target, ctx.run),
    )
    transfer_set = None
    if config.calib == "synthetic":
        # after distill its larger, later pool; `pipeline drop` / `pipeline quantize` have synthesize's
        source = "distill" if ctx.recipe.trains_a_student else "synthesize"
        transfer_set = ctx.artifact(source, "transfer_set")
    search = ctx.run.entry("search") if "search" in ctx.recipe.stages else None
    if search and search["metrics"].get("int8_format"):
        config = replace(config, int8_format=search["metrics"]["int8_format"])
    return QuantizeStage(
        ctx.artifact("export", "teacher" if handed_on is None else "student"),
        handed_on or ctx.teacher_path,
        transfer_set,
        config,
    )


def deployed_onnx(ctx: BuildContext) -> Path:
    """The model the build hands on: the quantised one when quantize ran, else the exported student."""
    if "quantize" in stages_to_run(ctx.recipe, ctx.options, "bench", ctx.target, ctx.run):
        return ctx.artifact("quantize", "model")
    return ctx.artifact("export", "student")


def engine_config(target: Target, precision_name: str, input_shape) -> EngineConfig:
    options = measurement_options(target)
    return EngineConfig(
        target=target.name,
        precision=precision_name,
        batch=target.batch,
        input_shape=tuple(input_shape),
        max_batch=target.max_batch,
        workspace_mb=target.tensorrt.workspace_mb,
        dla_core=target.tensorrt.dla_core,
        gpu_fallback=target.tensorrt.gpu_fallback,
        tensorrt_min=target.tensorrt.min_version,
        tensorrt_max=target.tensorrt.max_version,
        host=options["host"],
        remote=options["remote"],
        releases=target.tensorrt.releases,
        version_compatible=target.tensorrt.version_compatible,
        hardware_compatible=target.tensorrt.hardware_compatible,
    )


def engine_stage(ctx: BuildContext) -> EngineStage:
    previous = ctx.run.root / "engine" / "timing.cache"
    return EngineStage(
        deployed_onnx(ctx),
        engine_config(
            ctx.target, handed_on_precision(ctx.recipe, ctx.options, ctx.target, ctx.run), ctx.teacher.input_shape
        ),
        previous_cache=previous,
    )


def bench_stage(ctx: BuildContext) -> BenchStage:
    models = {"teacher": ctx.artifact("export", "teacher"), "student": deployed_onnx(ctx)}
    config = bench_config(ctx.target, ctx.budget, ctx.teacher.preprocess, ctx.eval, ctx.options.seed)
    engine = ctx.run.entry("engine")
    if engine and engine.get("metrics", {}).get("built") and engine["metrics"].get("built_on") == "local":
        config = replace(config, engines={"student": str(ctx.artifact("engine", "engine"))})
    return BenchStage(models, config)


STAGE_FACTORIES = {
    "synthesize": synthesize_stage,
    "distill": distill_stage,
    "drop": drop_stage,
    "search": search_stage,
    "export": export_stage,
    "quantize": quantize_stage,
    "engine": engine_stage,
    "bench": bench_stage,
}
