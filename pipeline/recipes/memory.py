"""Training batches that fit the build's memory limit (issue 22 item 8): at 224 px the budgets' batch of 128
would take a ResNet-34's synthesis step alone to 6.7 GiB, and drop's fine-tune batch of 64 a ResNet-50's
recovery to about 9 GB. A batch is halved until what one step adds per image (models/memory.py), times the
batch, fits beside what a build process holds, the transfer set and the models' weights, gradients and
optimizer state."""

from pipeline.kd import FeatureKDSettings
from pipeline.models import create_model
from pipeline.models.loaded import LoadedModel
from pipeline.models.memory import saved_bytes_per_image
from pipeline.recipes.plan import model_to_drop

GIB = 2**30
MIN_BATCH = 8  # below this a data-free step learns too little; a limit it cannot meet is said, not enforced
# what a build process holds before it trains (torch, onnxruntime, the teacher): 0.8 GiB measured after `prepare`
# for a ResNet-34 at 224 on the Xeon. A constant, not this process's figure, so a --steps build stays reproducible
PROCESS_BYTES = 1 * GIB
POOL_BYTES = 256 * 2**20  # the transfer set's default capacity (synthesize/stage.py: ~256 MB of uint8 pixels)
DROP_BATCH = FeatureKDSettings.batch_size  # PRACTISE's fine-tune batch of 64, also the adapter probes'
# the drop stage holds the teacher, its device copy, the model losing blocks, its gradients and SGD's momentum
DROP_WEIGHT_COPIES = 5


def memory_safe_batch(
    teacher: LoadedModel, student: str | None, batch: int, limit_gib: float
) -> tuple[int, str | None]:
    """The synthesize/distill batch: the largest of batch, batch/2, ... (not below MIN_BATCH) that fits
    `limit_gib`; a note when it changed."""
    shape = teacher.input_shape
    per_image = saved_bytes_per_image(teacher.model, shape, input_grad=True, train=False)  # a synthesis step
    weights = _weight_bytes(teacher.model)
    if student is not None:
        model = create_model(student, in_channels=shape[0], num_classes=teacher.num_classes, image_size=shape[1])
        per_image = max(per_image, saved_bytes_per_image(model, shape, input_grad=False, train=True))  # KD
        weights += 4 * _weight_bytes(model)  # weights, grads, Adam's two
    return _halve_to_fit("training batch", per_image, PROCESS_BYTES + POOL_BYTES + weights, batch, limit_gib, shape)


_DROP_BATCHES: dict = {}  # the count takes forward passes at 224 px, and the plan and the stage factories all ask


def drop_batch_for(ctx, teacher: bool | None = None) -> tuple[int, str | None]:
    """The batch of drop's adapter probes and recovery fine-tune (`ctx`: a BuildContext) for the model that loses
    blocks (`teacher` true: the teacher's, whatever the recipe), trained whole with the teacher frozen beside it:
    DROP_BATCH, halved until it fits ctx.options.max_memory_gib; a note when it changed."""
    from_teacher = bool(teacher) or not ctx.recipe.trains_a_student
    shape = tuple(ctx.teacher.input_shape)
    path = ctx.teacher_path
    model_key = (str(path), path.stat().st_mtime_ns, ctx.teacher.name) if from_teacher else (ctx.student,)
    key = (*model_key, ctx.teacher.num_classes, shape, ctx.options.max_memory_gib)
    if key not in _DROP_BATCHES:
        model = ctx.teacher.model if from_teacher else model_to_drop(ctx.recipe, ctx.teacher, ctx.student)
        per_image = saved_bytes_per_image(model, shape, input_grad=False, train=True)
        held = PROCESS_BYTES + POOL_BYTES + DROP_WEIGHT_COPIES * _weight_bytes(model)
        _DROP_BATCHES[key] = _halve_to_fit(
            "drop fine-tune batch", per_image, held, DROP_BATCH, ctx.options.max_memory_gib, shape
        )
    return _DROP_BATCHES[key]


def _weight_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _halve_to_fit(what: str, per_image: int, held: int, batch: int, limit_gib: float, shape) -> tuple[int, str | None]:
    room = limit_gib * GIB - held
    chosen = batch
    while chosen > MIN_BATCH and chosen * per_image > room:
        chosen = max(MIN_BATCH, chosen // 2)
    if chosen == batch:
        return batch, None
    needed = (held + chosen * per_image) / GIB
    fits = "" if chosen * per_image <= room else f" (not even {chosen} fits: about {needed:.1f} GiB)"
    return chosen, (
        f"{what} {batch} -> {chosen}: a step adds up to {per_image / 2**20:.0f} MiB per image at "
        f"{shape[1]}x{shape[2]}, and the build stays under {limit_gib:g} GiB{fits}"
    )
