"""A training batch that fits the build's memory limit (issue 22 item 8): at 224 px the budgets' batch of 128
would take a ResNet-34's synthesis step alone to 6.7 GiB. The batch is halved until what one step adds per
image (models/memory.py), times the batch, fits beside what a build process holds, the transfer set and the
models' weights, gradients and optimizer state."""

from pipeline.models import create_model
from pipeline.models.loaded import LoadedModel
from pipeline.models.memory import saved_bytes_per_image

GIB = 2**30
MIN_BATCH = 8  # below this a data-free step learns too little; a limit it cannot meet is said, not enforced
# what a build process holds before it trains (torch, onnxruntime, the teacher): 0.8 GiB measured after `prepare`
# for a ResNet-34 at 224 on the Xeon. A constant, not this process's figure, so a --steps build stays reproducible
PROCESS_BYTES = 1 * GIB
POOL_BYTES = 256 * 2**20  # the transfer set's default capacity (synthesize/stage.py: ~256 MB of uint8 pixels)


def memory_safe_batch(
    teacher: LoadedModel, student: str | None, batch: int, limit_gib: float
) -> tuple[int, str | None]:
    """The largest of batch, batch/2, ... (not below MIN_BATCH) that fits `limit_gib`; a note when it changed."""
    shape = teacher.input_shape
    per_image = saved_bytes_per_image(teacher.model, shape, input_grad=True, train=False)  # a synthesis step
    weights = sum(p.numel() * p.element_size() for p in teacher.model.parameters())
    if student is not None:
        model = create_model(student, in_channels=shape[0], num_classes=teacher.num_classes, image_size=shape[1])
        per_image = max(per_image, saved_bytes_per_image(model, shape, input_grad=False, train=True))  # KD
        weights += 4 * sum(p.numel() * p.element_size() for p in model.parameters())  # weights, grads, Adam's two
    held = PROCESS_BYTES + POOL_BYTES + weights
    room = limit_gib * GIB - held
    chosen = batch
    while chosen > MIN_BATCH and chosen * per_image > room:
        chosen = max(MIN_BATCH, chosen // 2)
    if chosen == batch:
        return batch, None
    needed = (held + chosen * per_image) / GIB
    fits = "" if chosen * per_image <= room else f" (not even {chosen} fits: about {needed:.1f} GiB)"
    return chosen, (
        f"training batch {batch} -> {chosen}: a step adds up to {per_image / 2**20:.0f} MiB per image at "
        f"{shape[1]}x{shape[2]}, and the build stays under {limit_gib:g} GiB{fits}"
    )
