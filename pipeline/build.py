"""`pipeline build`: the stages in order in one run folder, then a summary of teacher vs student."""

from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline.assets import resolve_teacher
from pipeline.bench.stage import BenchConfig, BenchStage
from pipeline.budgets import Budget, get_budget
from pipeline.data import fashion_mnist
from pipeline.distill.engine import StudentTraining
from pipeline.distill.stage import DistillConfig, DistillStage
from pipeline.errors import PipelineError
from pipeline.drop.finetune import RecoverySettings
from pipeline.drop.recoverability import RecoverabilitySettings
from pipeline.drop.select import LatencyBudget
from pipeline.drop.stage import DropConfig, DropStage
from pipeline.engine.stage import EngineConfig, EngineStage
from pipeline.export.stage import ExportConfig, ExportStage
from pipeline.measure import LatencySettings
from pipeline.models import default_student
from pipeline.models.load import LoadedModel
from pipeline.preprocess import Preprocess, preprocess_from_onnx
from pipeline.quantize.int8 import Int8Settings
from pipeline.quantize.stage import QuantizeConfig, QuantizeStage
from pipeline.search.stage import SEARCHABLE_PRECISIONS, SearchConfig, SearchStage
from pipeline.stage import RunFolder
from pipeline.synthesize.base import resolve_options
from pipeline.synthesize.stage import SynthesizeConfig, SynthesizeStage
from pipeline.targets import Target, load_target
from pipeline.teacher_spec import TeacherSpec

STAGE_ORDER = ("synthesize", "distill", "drop", "search", "export", "quantize", "engine", "bench")
DEFAULT_SYNTHESIZER = "auto"  # bn-inversion for teachers with BatchNorm, else dafl


@dataclass
class BuildOptions:
    teacher: str | None = None  # path, 'embedded:NAME' or None for the default teacher
    arch: str | None = None
    target: str = "cpu"
    budget: str = "quick"
    out: Path | None = None
    student: str | None = None
    eval: str | None = None  # 'fmnist', an image folder, 'none'; default: fmnist for the embedded teachers
    input_shape: tuple[int, int, int] | None = None
    num_classes: int | None = None
    trust_checkpoint: bool = False
    synthesizer: str = DEFAULT_SYNTHESIZER
    synth_preset: str | None = None
    synth_options: dict = field(default_factory=dict)  # --synth-option key=value overrides
    temperature: float | None = None
    ema: float | None = None
    feature_weight: float | None = None
    kd_steps: int | None = None
    augment: bool | None = None
    device: str = "auto"
    mix_images: str | None = None  # a folder (or fmnist-train) of real images mixed into the transfer set
    mix_per_class: int = 10
    seed: int = 0
    steps: int | None = None  # bound data-free training by steps instead of the budget's seconds (reproducible)
    until: str = "bench"  # the last stage the command runs (`pipeline synthesize`: synthesize)
    force: bool = False
    command: str = ""
    # block dropping: which model loses blocks ("teacher": `pipeline drop`, "student": build with a latency flag)
    drop_from: str | None = None
    latency_reduction: float | None = None
    latency_ms: float | None = None
    drop_blocks: tuple[str, ...] | None = None  # drop exactly these blocks (no latency-driven selection)
    images: str | None = None  # few-shot drop: real images (a folder or fmnist-train) instead of the transfer set
    per_class: int = 50
    drop_iterations: int | None = None
    drop_lr: float | None = None
    # quantisation: "teacher" = `pipeline quantize` (the teacher itself is quantised; no distill, no drop)
    quantize_from: str | None = None
    precision: str | None = None  # fp32, fp16, int8, binary; None = the target's precision
    calib: str = "synthetic"  # synthetic (the transfer set) or real (--images)
    calib_method: str = "minmax"
    calib_images: int = 512
    max_accuracy_drop: float = 0.5
    binary_iterations: int | None = None
    binary_coverage: float = 0.9
    host: str | None = None  # "user@device": measure latency and build the engine there (overrides the target's)
    auto_drop: bool = False  # `build`: search under the budget when the target file sets one
    # latency-budget search: "build" (the teacher and the distilled student as bases), "teacher" (`pipeline search`)
    search: str | None = None


@dataclass
class BuildContext:
    options: BuildOptions
    teacher_path: Path
    teacher: LoadedModel
    spec: TeacherSpec
    target: Target
    budget: Budget
    run: RunFolder
    eval: str | None


def prepare(options: BuildOptions) -> BuildContext:
    """Resolve and validate everything before any stage runs, so bad input fails in one line, early."""
    target = load_target(options.target).with_host(options.host)
    target.check_precision(precision(options, target))
    if options.auto_drop and options.drop_from is None and options.quantize_from is None and options.search is None \
            and (target.latency_budget_ms is not None or target.latency_reduction is not None):
        options = replace(options, search="build")  # the target's budget is part of what `build` delivers
    if options.search is not None:
        drop_budget(options, target)  # a missing or bad latency budget fails before any stage runs
    budget = get_budget(options.budget)
    teacher_path = resolve_teacher(options.teacher)
    spec = TeacherSpec(options.arch, options.input_shape, options.num_classes, options.trust_checkpoint)
    teacher = spec.load(teacher_path)
    if options.input_shape is None and target.input_size is not None \
            and tuple(target.input_size) != teacher.input_shape[1:]:
        # the target asks for another resolution than the checkpoint's default: reload (and re-probe) at that size
        spec = replace(spec, input_shape=(teacher.input_shape[0], *target.input_size))
        teacher = spec.load(teacher_path)
    if options.drop_from is not None:
        check_droppable(options, teacher, teacher_path)
    if options.drop_from is not None and options.drop_blocks is None:
        drop_budget(options, target)  # a missing or bad latency budget fails before any stage runs
    quantize_config(options, target, budget, None, spec)  # bad precision / calibration options fail early
    if options.synthesizer == "auto":
        options = replace(options, synthesizer=auto_synthesizer(teacher))
    suffix = "-drop" if options.drop_from == "teacher" else f"-{precision(options, target)}" if options.quantize_from else ""
    out = options.out or Path("runs") / f"{teacher_path.stem}-{target.name}{suffix}"
    eval_spec = choose_eval(options.eval, teacher)
    return BuildContext(options, teacher_path, teacher, spec, target, budget, RunFolder(out), eval_spec)


def check_droppable(options: BuildOptions, teacher: LoadedModel, teacher_path: Path) -> None:
    """Before any stage runs: the model that will lose blocks has them, and --drop-blocks names exist in it."""
    from pipeline.drop.blocks import require_block_names, require_blocks
    from pipeline.models import create_model

    if options.drop_from == "teacher":
        model, label = teacher.model, f"{teacher_path.name} ({teacher.arch or teacher.source_format})"
    else:
        label = options.student or default_student(teacher.arch, teacher.input_shape)
        channels, height, _ = teacher.input_shape
        model = create_model(label, in_channels=channels, num_classes=teacher.num_classes, image_size=height)
    if options.drop_blocks is not None:
        require_block_names(model, options.drop_blocks, label)
    elif options.drop_from == "teacher":
        require_blocks(model, label)


def auto_synthesizer(teacher: LoadedModel) -> str:
    """BN-statistics inversion needs BatchNorm layers it can hook; TorchScript/exported graphs and BN-free nets get DAFL."""
    import torch.nn as nn

    has_bn = isinstance(teacher.model, nn.Module) and any(isinstance(m, nn.BatchNorm2d) for m in teacher.model.modules())
    return "bn-inversion" if has_bn else "dafl"


def choose_eval(requested: str | None, teacher: LoadedModel | None) -> str | None:
    """--eval as given ('none' turns it off); unset: Fashion-MNIST for teachers trained on it, else nothing."""
    if requested is not None:
        return None if requested.lower() == "none" else requested
    trained_on = teacher.metadata.get("training", {}).get("dataset") if teacher is not None else None
    if trained_on == "fashion-mnist" and fashion_mnist.is_available():
        return "fmnist"
    return None


def bench_config(target: Target, budget: Budget, preprocess: Preprocess, eval_spec: str | None, seed: int = 0) -> BenchConfig:
    """The target says what to measure and where; the budget may only lower the number of timed runs."""
    return BenchConfig(batch=target.batch, threads=target.threads,
                       warmup=min(target.warmup, budget.bench_warmup), runs=min(target.runs, budget.bench_runs),
                       preprocess=preprocess.to_dict(), eval=eval_spec, eval_limit=budget.eval_limit, seed=seed,
                       **measurement_options(target))


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
    return resolve_options("images", None, {"path": options.mix_images, "per_class": options.mix_per_class,
                                            "batch_size": max(1, budget.batch_size // 4)})


def student_training(options: BuildOptions, budget: Budget) -> StudentTraining:
    overrides = {name: value for name, value in (("temperature", options.temperature), ("ema", options.ema),
                                                 ("feature_weight", options.feature_weight),
                                                 ("kd_steps", options.kd_steps), ("augment", options.augment))
                 if value is not None}
    return replace(StudentTraining(batch_size=budget.batch_size), **overrides)


def synthesis_seconds(options: BuildOptions, target: Target, budget: Budget) -> float:
    """Longer when the transfer set itself is the training data and no distill stage continues the synthesis."""
    standalone = options.drop_from == "teacher" or options.search == "teacher" or (
        options.quantize_from == "teacher" and precision(options, target) == "binary")
    return budget.standalone_synthesize_seconds if standalone else budget.synthesize_seconds


def training_steps(options: BuildOptions, target: Target, budget: Budget) -> tuple[int | None, int | None]:
    """--steps N: synthesize and distill share N steps in the proportion the budget shares its seconds
    (`pipeline synthesize`, or a synthesis with no distill after it, takes all N)."""
    if options.steps is None:
        return None, None
    seconds = synthesis_seconds(options, target, budget)
    if seconds != budget.synthesize_seconds or options.until == "synthesize":
        return options.steps, None
    synthesize = max(1, round(options.steps * seconds / (seconds + budget.distill_seconds)))
    return synthesize, max(1, options.steps - synthesize)


def synthesize_stage(ctx: BuildContext) -> SynthesizeStage:
    return SynthesizeStage(ctx.teacher_path, SynthesizeConfig(
        seconds=synthesis_seconds(ctx.options, ctx.target, ctx.budget), method=ctx.options.synthesizer,
        steps=training_steps(ctx.options, ctx.target, ctx.budget)[0],
        options=synthesizer_options(ctx.options, ctx.budget), seed=ctx.options.seed, device=ctx.options.device,
        mix=mix_options(ctx.options, ctx.budget), teacher=ctx.spec))


def distill_stage(ctx: BuildContext) -> DistillStage:
    student = ctx.options.student or default_student(ctx.teacher.arch, ctx.teacher.input_shape)
    return DistillStage(
        ctx.teacher_path, ctx.run.artifact("synthesize", "transfer_set"), ctx.run.artifact("synthesize", "synthesizer"),
        DistillConfig(student=student, seconds=ctx.budget.distill_seconds, seed=ctx.options.seed,
                      steps=training_steps(ctx.options, ctx.target, ctx.budget)[1],
                      training=student_training(ctx.options, ctx.budget), eval=ctx.eval,
                      eval_every_s=ctx.budget.curve_every_s, device=ctx.options.device,
                      mix=mix_options(ctx.options, ctx.budget), teacher=ctx.spec))


def latency_source(target: Target) -> tuple[str, str | None]:
    """Where this target's latency can be measured from here: ("remote", None) over SSH to its host,
    ("local", None) with its runtime on this machine, or ("proxy", why) with this machine's onnxruntime."""
    if target.remote:
        return "remote", None
    if target.runtime == "tensorrt":
        from pipeline.runtimes.tensorrt_runner import tensorrt_available

        reason = tensorrt_available()
        if reason is not None:
            return "proxy", reason
    return "local", None


def measurement_options(target: Target) -> dict:
    """The LatencySettings / BenchConfig fields that say where and how latency is measured for the target."""
    source, _ = latency_source(target)
    remote = {"port": target.remote_port, "python": target.remote_python, "identity": target.remote_identity,
              "ssh_options": list(target.ssh_options), "workdir": target.remote_workdir} if target.remote else None
    tensorrt = {"max_batch": target.max_batch, "workspace_mb": target.workspace_mb, "dla_core": target.dla_core,
                "gpu_fallback": target.gpu_fallback} if target.runtime == "tensorrt" else None
    if target.runtime != "tensorrt":
        engine_precision = "fp32"
    elif target.precision in ("int8", "binary"):
        engine_precision = "fp16"  # blocks and candidates are float models: INT8 engines need Q/DQ in the ONNX
    else:
        engine_precision = target.precision
    return {"runtime": "onnxruntime" if source == "proxy" else target.runtime, "source": source,
            "proxy_for": target.runtime if source == "proxy" else None, "host": target.host if target.remote else None,
            "remote": remote, "tensorrt": tensorrt, "precision": engine_precision}


def target_latency(target: Target, budget: Budget, rounds: int) -> LatencySettings:
    """Interleaved comparisons inside a stage (drop's candidates, quantize's formats): the target's runtime,
    batch and threads, here, on its host, or by proxy; many short rounds (the budget may only lower the
    target's run counts)."""
    return LatencySettings(batch=target.batch, threads=target.threads,
                           warmup=min(target.warmup, budget.bench_warmup), runs=min(target.runs, budget.drop_latency_runs),
                           rounds=rounds, max_seconds=0.5, **measurement_options(target))


def drop_stage(ctx: BuildContext) -> DropStage:
    options, budget, target = ctx.options, ctx.budget, ctx.target
    reduction = latency_ms = None
    if options.drop_blocks is None:
        latency_budget = drop_budget(options, target)
        reduction, latency_ms = latency_budget.reduction, latency_budget.ms
    latency = target_latency(target, budget, budget.drop_latency_rounds)
    recovery = RecoverySettings(**{k: v for k, v in (("iterations", options.drop_iterations or budget.drop_iterations),
                                                     ("lr", options.drop_lr)) if v is not None})
    from_teacher = options.drop_from == "teacher"
    model = ctx.teacher_path if from_teacher else ctx.run.artifact("distill", "student")
    transfer_set = None
    if options.images is None:
        transfer_set = ctx.run.artifact("synthesize" if from_teacher else "distill", "transfer_set")
    return DropStage(model, transfer_set, DropConfig(
        target=target.name, latency=latency, reduction=reduction, latency_ms=latency_ms,
        recoverability=RecoverabilitySettings(steps=budget.drop_adapter_steps), recovery=recovery,
        images=options.images, per_class=options.per_class, seed=options.seed, device=options.device,
        blocks=options.drop_blocks, model=ctx.spec if from_teacher else TeacherSpec()), cache_dir=ctx.run.root / "cache")


def drop_budget(options: BuildOptions, target: Target) -> LatencyBudget:
    """--latency-reduction or --latency-ms, else the target's latency_budget_ms or latency_reduction. A budget
    in milliseconds is a device figure: a proxy measurement cannot check it, so it needs the device (--host)."""
    if options.latency_reduction is None and options.latency_ms is None:
        if target.latency_budget_ms is None and target.latency_reduction is None:
            raise PipelineError("block dropping needs a latency budget: --latency-reduction 0.3 or --latency-ms 1.5 "
                                f"(or latency_budget_ms / latency_reduction in the {target.name} target)")
        budget = LatencyBudget(target.latency_reduction, target.latency_budget_ms)
    else:
        budget = LatencyBudget(options.latency_reduction, options.latency_ms)
    source, why = latency_source(target)
    if budget.ms is not None and source == "proxy":
        raise PipelineError(f"a {budget.ms} ms budget is a {target.name} figure, and latency can only be measured by "
                            f"proxy here ({why}): give --host user@device, or a relative budget (--latency-reduction)")
    return budget


def handed_on_checkpoint(options: BuildOptions, run: RunFolder) -> Path | None:
    """The PyTorch model the later stages work on; None when it is the teacher itself (`pipeline quantize`)."""
    if options.search:
        return run.artifact("search", "model")
    if options.drop_from:
        return run.artifact("drop", "model")
    if options.quantize_from == "teacher":
        return None
    return run.artifact("distill", "student")


def search_stage(ctx: BuildContext) -> SearchStage:
    options, budget, target = ctx.options, ctx.budget, ctx.target
    latency_budget = drop_budget(options, target)
    allowed = (options.precision,) if options.precision else target.allowed_precisions
    precisions = tuple(p for p in allowed if p in SEARCHABLE_PRECISIONS)
    if not precisions:
        raise PipelineError(f"the budget search covers {', '.join(SEARCHABLE_PRECISIONS)}; {target.name} allows only "
                            f"{', '.join(allowed)}")
    student = ctx.run.artifact("distill", "student") if options.search == "build" else None
    recovery = RecoverySettings(**{k: v for k, v in (("iterations", options.drop_iterations or budget.drop_iterations),
                                                     ("lr", options.drop_lr)) if v is not None})
    return SearchStage(ctx.teacher_path, student, ctx.run.artifact("distill" if student else "synthesize", "transfer_set"),
                       SearchConfig(target=target.name, latency=target_latency(target, budget, budget.drop_latency_rounds),
                                    reduction=latency_budget.reduction, latency_ms=latency_budget.ms, precisions=precisions,
                                    recoverability=RecoverabilitySettings(steps=budget.drop_adapter_steps),
                                    recovery=recovery, calib_images=options.calib_images,
                                    speedup_rounds=budget.quantize_latency_rounds, eval=ctx.eval,
                                    eval_limit=budget.eval_limit, seed=options.seed, device=options.device,
                                    teacher=ctx.spec),
                       cache_dir=ctx.run.root / "cache")


def export_stage(ctx: BuildContext) -> ExportStage:
    models = {"teacher": ctx.teacher_path}
    handed_on = handed_on_checkpoint(ctx.options, ctx.run)
    if handed_on is not None:
        models["student"] = handed_on
    return ExportStage(models, ExportConfig(eval=ctx.eval, seed=ctx.options.seed, specs={"teacher": ctx.spec}))


def precision(options: BuildOptions, target: Target) -> str:
    return options.precision or target.precision


def quantize_config(options: BuildOptions, target: Target, budget: Budget, eval_spec: str | None,
                    model: TeacherSpec) -> QuantizeConfig | None:
    """None when the build hands on fp32; raises on bad quantisation options. `model`: how to load the
    checkpoint being quantised (the teacher's options when it is the teacher)."""
    wanted = precision(options, target)
    if wanted == "fp32":
        if options.quantize_from:
            raise PipelineError("`pipeline quantize` needs --precision int8, fp16 or binary (the target says fp32)")
        return None
    if options.calib == "real" and not options.images:
        raise PipelineError("--calib real needs --images DIR (or fmnist-train): the unlabelled images to calibrate on")
    calib = options.calib
    if calib == "synthetic" and options.drop_from == "teacher" and options.images is not None:
        calib = "real"  # few-shot `pipeline drop` made no transfer set: its real (unlabelled) images calibrate too
    latency = target_latency(target, budget, budget.quantize_latency_rounds)
    return QuantizeConfig(
        precision=wanted, runtime=target.runtime, latency=latency, calib=calib,
        int8=Int8Settings(method=options.calib_method), images=options.images, calib_images=options.calib_images,
        max_accuracy_drop=options.max_accuracy_drop,
        binary_training=RecoverySettings(iterations=options.binary_iterations or budget.binary_iterations),
        binary_coverage=options.binary_coverage,
        eval=eval_spec, eval_limit=budget.eval_limit, seed=options.seed, model=model)


def quantize_stage(ctx: BuildContext) -> QuantizeStage:
    options = ctx.options
    handed_on = handed_on_checkpoint(options, ctx.run)
    config = quantize_config(options, ctx.target, ctx.budget, ctx.eval, ctx.spec if handed_on is None else TeacherSpec())
    transfer_set = None
    if config.calib == "synthetic":
        # after distill its larger, later pool; `pipeline drop` / `pipeline quantize` have synthesize's
        source = "distill" if "distill" in stages_to_run(options, "quantize", ctx.target) else "synthesize"
        transfer_set = ctx.run.artifact(source, "transfer_set")
    search = ctx.run.entry("search") if options.search else None
    if search and search["metrics"].get("int8_format"):
        config = replace(config, int8_format=search["metrics"]["int8_format"])
    return QuantizeStage(ctx.run.artifact("export", "teacher" if handed_on is None else "student"),
                         handed_on or ctx.teacher_path, transfer_set, config)


def deployed_onnx(ctx: BuildContext) -> Path:
    """The model the build hands on: the quantised one when quantize ran, else the exported student."""
    if "quantize" in stages_to_run(ctx.options, "bench", ctx.target):
        return ctx.run.artifact("quantize", "model")
    return ctx.run.artifact("export", "student")


def engine_config(target: Target, precision_name: str, input_shape) -> EngineConfig:
    options = measurement_options(target)
    return EngineConfig(target=target.name, precision=precision_name, batch=target.batch, input_shape=tuple(input_shape),
                        max_batch=target.max_batch, workspace_mb=target.workspace_mb, dla_core=target.dla_core,
                        gpu_fallback=target.gpu_fallback, tensorrt_min=target.tensorrt_min,
                        tensorrt_max=target.tensorrt_max, host=options["host"], remote=options["remote"])


def engine_stage(ctx: BuildContext) -> EngineStage:
    previous = ctx.run.root / "engine" / "timing.cache"
    return EngineStage(deployed_onnx(ctx), engine_config(ctx.target, precision(ctx.options, ctx.target),
                                                         ctx.teacher.input_shape), previous_cache=previous)


def bench_stage(ctx: BuildContext) -> BenchStage:
    models = {"teacher": ctx.run.artifact("export", "teacher"), "student": deployed_onnx(ctx)}
    config = bench_config(ctx.target, ctx.budget, ctx.teacher.preprocess, ctx.eval, ctx.options.seed)
    engine = ctx.run.entry("engine")
    if engine and engine.get("metrics", {}).get("built") and engine["metrics"].get("built_on") == "local":
        config = replace(config, engines={"student": str(ctx.run.artifact("engine", "engine"))})
    return BenchStage(models, config)


STAGE_FACTORIES = {"synthesize": synthesize_stage, "distill": distill_stage, "drop": drop_stage, "search": search_stage,
                   "export": export_stage, "quantize": quantize_stage, "engine": engine_stage, "bench": bench_stage}


def stages_to_run(options: BuildOptions, until: str, target: Target) -> list[str]:
    """The stages up to `until` that this build needs: `pipeline drop` skips distill (and synthesize when real
    images are given); a build without a latency budget skips drop; an fp32 build skips quantize;
    `pipeline quantize` skips distill and drop (and synthesize when it calibrates on real images)."""
    wanted = list(STAGE_ORDER[:STAGE_ORDER.index(until) + 1])
    skip = set()
    if options.search is None:
        skip.add("search")
    elif options.search == "teacher":
        skip.add("distill")
    if options.drop_from is None:
        skip.add("drop")
    elif options.drop_from == "teacher":
        skip.add("distill")
        if options.images is not None:
            skip.add("synthesize")
    if precision(options, target) == "fp32":
        skip.add("quantize")
    if target.runtime != "tensorrt":
        skip.add("engine")
    if options.quantize_from == "teacher" and options.drop_from is None:
        skip.update({"distill", "drop"})
        if options.calib == "real":
            skip.add("synthesize")
    return [name for name in wanted if name not in skip]


DATA_PARALLEL_STAGES = ("synthesize", "distill")


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
            command=options.command, teacher=str(ctx.teacher_path), teacher_arch=ctx.teacher.arch,
            teacher_format=ctx.teacher.source_format, target=ctx.target.to_dict(), budget=ctx.budget.to_dict(),
            preprocess=ctx.teacher.preprocess.to_dict(), num_classes=ctx.teacher.num_classes, eval=ctx.eval,
            world_size=distributed.world_size())
        for name in STAGE_ORDER:
            # asked again each time: the search decides the precision, and with it whether quantize runs
            if name not in stages_to_run(ctx.options, until, ctx.target):
                continue
            if name not in DATA_PARALLEL_STAGES and distributed.active():
                main = distributed.is_main()
                distributed.finish()
                if not main:
                    break
            entry = ctx.run.run(STAGE_FACTORIES[name](ctx), force=options.force)
            if name == "search":
                ctx.options = replace(ctx.options, precision=entry["metrics"]["precision"])
        distributed.finish()
        return summarize(ctx.run)


def summarize(run: RunFolder) -> dict:
    """Teacher and student side by side: accuracy, size, latency (from the manifest). The student is the
    handed-on model: quantised when the quantize stage ran (then possibly the quantised teacher itself)."""
    stages = run.manifest["stages"]
    export = stages.get("export", {}).get("metrics", {})
    bench = stages.get("bench", {}).get("metrics", {})
    quantized = stages.get("quantize", {}).get("metrics")
    rows = []
    for name in ("teacher", "student"):
        source = name if name in export else "teacher" if name == "student" and quantized else None
        if source is None:
            continue
        row = {"model": name, "arch": export[source].get("arch"), "parameters": export[source].get("parameters"),
               "precision": "fp32", "onnx_bytes": export[source].get("size_bytes"),
               "onnx": str(run.root / f"export/{source}.onnx")}
        if name == "student" and quantized:
            row.update(precision=quantized["precision"], onnx_bytes=quantized["size_bytes"],
                       onnx=str(run.root / "quantize/model.onnx"))
        latency = bench.get(name, {}).get("latency", {})
        row.update(accuracy=bench.get(name, {}).get("accuracy"), eval_images=bench.get(name, {}).get("eval_images"),
                   latency_median_ms=latency.get("median_ms"), latency_p90_ms=latency.get("p90_ms"),
                   latency_cv=latency.get("cv"))
        rows.append(row)
    summary_drop = stages.get("drop", {}).get("metrics")
    search = stages.get("search", {}).get("metrics")
    dropped = summary_drop["dropped_blocks"] if summary_drop else search["chosen"]["dropped"] if search else None
    if dropped is not None:
        for row in rows:
            if row["model"] == "student":
                row["dropped_blocks"] = dropped
    return {"run_folder": str(run.root), "manifest": str(run.manifest_path), "rows": rows,
            "latency_source": next((e.get("latency_source") for e in bench.values()), None), "notes": run_notes(run),
            "stages": {name: {"wall_s": entry.get("wall_s")} for name, entry in stages.items()}}


def run_notes(run: RunFolder) -> list[str]:
    """What the table does not say: where latency was measured, and whether an engine exists."""
    stages = run.manifest["stages"]
    notes = []
    search = stages.get("search", {}).get("metrics")
    if search:
        notes.append(f"budget search: {search['explanation']} Front: {run.root / 'search' / 'pareto.png'}")
    bench = stages.get("bench", {}).get("metrics", {})
    first = next(iter(bench.values()), {})
    drop = stages.get("drop", {}).get("metrics") or stages.get("search", {}).get("metrics") or {}
    sources = {first.get("latency_source"), drop.get("latency_source")} - {None}
    if "proxy" in sources:
        target = run.manifest.get("target", {}).get("name")
        notes.append(f"latency figures are a proxy: {target} runs {first.get('proxy_for') or drop.get('proxy_for')}, which "
                     "is not available on this machine and no --host was given, so latency was measured with onnxruntime "
                     "on this CPU (block savings and speed-ups are indicative only; milliseconds are not the device's)")
    if "remote" in sources:
        measured = first.get("measured_on") or {}
        notes.append(f"latency measured on {measured.get('host')} with {measured.get('runtime')} "
                     f"(power mode {measured.get('nvpmodel_mode') or 'unknown'})")
    engine = stages.get("engine", {}).get("metrics")
    if engine and not engine.get("built"):
        notes.append(f"no TensorRT engine built ({engine.get('reason')}); on the device run "
                     f"{run.root / 'engine' / 'build_on_device.sh'}")
    elif engine:
        notes.append(f"engine: {run.root / 'engine' / 'model.engine'} (TensorRT {engine['stamp'].get('tensorrt_version')}, "
                     f"built on {engine.get('built_on')})")
    return notes


def run_bench_only(model: str | None, *, spec: TeacherSpec, target_name: str, budget_name: str, out: Path,
                   eval_spec: str | None, host: str | None = None) -> dict:
    """`pipeline bench`: latency (and accuracy with --eval) of one model: a checkpoint (exported first) or an .onnx
    file; on the target's host over SSH when it has one."""
    target, budget = load_target(target_name).with_host(host), get_budget(budget_name)
    path = resolve_teacher(model)
    run = RunFolder(out)
    if path.suffix == ".onnx":
        preprocess = preprocess_from_onnx(path, spec.input_shape)
        eval_spec = choose_eval(eval_spec, None)
    else:
        loaded = spec.load(path)
        preprocess = loaded.preprocess
        eval_spec = choose_eval(eval_spec, loaded)
        run.run(ExportStage({"model": path}, ExportConfig(eval=eval_spec, specs={"model": spec})))
        path = run.artifact("export", "model")
    entry = run.run(BenchStage({"model": path}, bench_config(target, budget, preprocess, eval_spec)))
    return {"run_folder": str(run.root), "onnx": str(path), **entry["metrics"]["model"]}


def run_engine_only(onnx: Path | None, run_folder: Path | None, *, target_name: str, host: str | None,
                    precision_name: str | None, out: Path | None) -> dict:
    """`pipeline engine`: pre-flight and build the TensorRT engine for one ONNX file, or for the model a run
    folder hands on (its quantised model, else its student), into `<out>/engine/`."""
    if (onnx is None) == (run_folder is None):
        raise PipelineError("give the model to build: --onnx FILE or --run RUN_FOLDER")
    if run_folder is not None:
        run = RunFolder(run_folder)
        stages = run.manifest["stages"]
        onnx = run.artifact("quantize", "model") if "quantize" in stages else run.artifact("export", "student") \
            if "student" in stages.get("export", {}).get("artifacts", {}) else run.artifact("export", "teacher")
        out = out or run_folder
    target = load_target(target_name).with_host(host)
    if target.runtime != "tensorrt":
        raise PipelineError(f"target {target.name} runs {target.runtime}: engines are for TensorRT targets "
                            f"({', '.join(n for n in available_target_names() if load_target(n).runtime == 'tensorrt')})")
    wanted = precision_name or target.precision
    target.check_precision(wanted)
    onnx = Path(onnx)
    if not onnx.is_file():
        raise PipelineError(f"ONNX file not found: {onnx}")
    preprocess = preprocess_from_onnx(onnx, None)
    run = RunFolder(out or Path("runs") / f"{onnx.stem}-{target.name}-engine")
    entry = run.run(EngineStage(onnx, engine_config(target, wanted, preprocess.input_shape),
                                previous_cache=run.root / "engine" / "timing.cache"))
    return {"run_folder": str(run.root), "onnx": str(onnx), **entry["metrics"]}


def available_target_names() -> list[str]:
    from pipeline.targets import available_targets

    return available_targets()
