"""Everything a build needs, resolved and validated before any stage runs, so bad input fails in one line, early."""

from dataclasses import replace
from pathlib import Path

from pipeline.assets import resolve_teacher
from pipeline.budgets import get_budget
from pipeline.data import fashion_mnist
from pipeline.models.load import LoadedModel
from pipeline.models.student_choice import choose_student
from pipeline.preprocess import preprocess_guess_warning
from pipeline.progress import log
from pipeline.recipes import checkpoint_readers  # noqa: F401  (registers the readers of dropped and binary checkpoints)
from pipeline.recipes.drop_specs import drop_budget
from pipeline.recipes.memory import memory_safe_batch
from pipeline.recipes.options import BuildContext, BuildOptions
from pipeline.recipes.plan import Recipe, choose_recipe, model_to_drop, precision, recipe_steps
from pipeline.recipes.stage_specs import quantize_config
from pipeline.stage import RunFolder
from pipeline.targets import load_target
from pipeline.teacher_spec import TeacherSpec


def prepare(options: BuildOptions) -> BuildContext:
    """Resolve and validate everything before any stage runs, so bad input fails in one line, early."""
    target = load_target(options.target).with_host(options.host)
    target.check_precision(precision(options, target))
    recipe = choose_recipe(options, target)  # a target's latency budget is part of what `build` delivers
    running = {step.stage for step in recipe_steps(recipe, options.until)}
    if "search" in running:
        drop_budget(options, target)  # a missing or bad latency budget fails before any stage runs
    budget = get_budget(options.budget)
    teacher_path = resolve_teacher(options.teacher)
    spec = TeacherSpec(
        options.arch, options.input_shape, options.num_classes, options.trust_checkpoint, options.preprocess
    )
    teacher = spec.load(teacher_path)
    if (
        options.input_shape is None
        and target.input_size is not None
        and tuple(target.input_size) != teacher.input_shape[1:]
    ):
        # the target asks for another resolution than the checkpoint's default: reload (and re-probe) at that size
        spec = replace(spec, input_shape=(teacher.input_shape[0], *target.input_size))
        teacher = spec.load(teacher_path)
    if teacher.preprocess_source == "guessed":
        log(preprocess_guess_warning(teacher.preprocess, teacher_path.name))
    student = None
    if recipe.trains_a_student and running & {"distill", "drop"}:
        student = choose_student(
            options.student, teacher.model, teacher.arch, teacher.input_shape, teacher.num_classes, teacher.name
        )
    memory_note = None
    if running & {"synthesize", "distill"}:  # the data-free steps: their batch must fit the memory limit
        student_name = student.name if student else None
        batch, memory_note = memory_safe_batch(teacher, student_name, budget.batch_size, options.max_memory_gib)
        if memory_note:
            log(f"note: {memory_note}")
            budget = replace(budget, batch_size=batch)
    if "drop" in recipe.stages:
        check_droppable(recipe, options, teacher, teacher_path, student.name if student else None)
        if options.drop_blocks is None:
            drop_budget(options, target)  # a missing or bad latency budget fails before any stage runs
    quantize_config(recipe, options, target, budget, None, spec)  # bad precision / calibration options fail early
    if options.synthesizer == "auto":
        options = replace(options, synthesizer=auto_synthesizer(teacher))
    suffix = {"drop": "-drop", "quantize": f"-{precision(options, target)}"}.get(recipe.command, "")
    out = options.out or Path("runs") / f"{teacher_path.stem}-{target.name}{suffix}"
    eval_spec = choose_eval(options.eval, teacher)
    return BuildContext(
        options,
        teacher_path,
        teacher,
        spec,
        target,
        budget,
        RunFolder(out),
        eval_spec,
        recipe,
        student=student.name if student else None,
        student_note=student.note if student else None,
        memory_note=memory_note,
    )


def check_droppable(
    recipe: Recipe, options: BuildOptions, teacher: LoadedModel, teacher_path: Path, student: str | None
) -> None:
    """Before any stage runs: the model that will lose blocks has them, and --drop-blocks names exist in it."""
    from pipeline.drop.blocks import require_block_names, require_blocks

    from_teacher = not recipe.trains_a_student
    model = model_to_drop(recipe, teacher, student)
    label = f"{teacher_path.name} ({teacher.arch or teacher.source_format})" if from_teacher else student
    if options.drop_blocks is not None:
        require_block_names(model, options.drop_blocks, label)
    elif from_teacher:
        require_blocks(model, label)


def auto_synthesizer(teacher: LoadedModel) -> str:
    """BN-statistics inversion needs BatchNorm layers it can hook; TorchScript/exported graphs and BN-free nets get DAFL."""
    import torch.nn as nn

    has_bn = isinstance(teacher.model, nn.Module) and any(
        isinstance(m, nn.BatchNorm2d) for m in teacher.model.modules()
    )
    return "bn-inversion" if has_bn else "dafl"


def choose_eval(requested: str | None, teacher: LoadedModel | None) -> str | None:
    """--eval as given ('none' turns it off); unset: Fashion-MNIST for teachers trained on it, else nothing."""
    if requested is not None:
        return None if requested.lower() == "none" else requested
    trained_on = teacher.metadata.get("training", {}).get("dataset") if teacher is not None else None
    if trained_on == "fashion-mnist" and fashion_mnist.is_available():
        return "fmnist"
    return None
