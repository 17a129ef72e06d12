"""Which student distils a teacher: never one that is not smaller than the teacher itself.

A student's whole point is to be cheaper than its teacher on the device. Before any stage runs, the candidate
students and the teacher are costed at the teacher's input size: parameters, and FLOPs of one image counted by
torch's `FlopCounterMode` (2 per multiply-add; TorchScript and torch.export graphs are counted too). The
default is the registry's usual student for the teacher's architecture when that is smaller on both counts,
else the first smaller one on a ladder for the input size; when nothing registered is smaller, the build is
refused in one line. A student the user names is only warned about. FLOPs are not latency (a CIFAR ResNet
at 224 px has few FLOPs and many activations): the measured latencies are checked again after `bench`
(`run_view.run_notes`)."""

from dataclasses import dataclass

import torch
import torch.nn as nn

from pipeline.errors import PipelineError
from pipeline.models.registry import create_model

# The usual smaller architecture for a registry teacher (kept where it is smaller than the teacher).
USUAL_STUDENTS = {
    "lenet5": "lenet5-half",
    "lenet5-half": "lenet5-half",
    "resnet8": "resnet8",
    "resnet14": "resnet8",
    "resnet20": "resnet14",
    "resnet32": "resnet20",
    "resnet18n": "resnet14",
    "resnet34n": "resnet18n",
    "resnet18": "resnet18",
    "resnet34": "resnet18",
    "resnet50": "resnet18",
    "mobilenet_v2": "mobilenet_v2",
}
# Tried in order when the usual student is not smaller: CIFAR-style nets for small images (they keep the full
# resolution through their first stage, which is cheap at 28-64 px and heavy at 224), ImageNet-style above.
SMALL_IMAGE_LADDER = ("resnet14", "resnet20", "resnet8", "lenet5", "lenet5-half")
LARGE_IMAGE_LADDER = ("resnet18", "mobilenet_v2")
SMALL_IMAGE_MAX_PX = 64


@dataclass(frozen=True)
class ModelCost:
    parameters: int
    flops: int  # of one image at the input size, 2 per multiply-add

    def describe(self) -> str:
        return f"{self.parameters:,} parameters, {self.flops / 1e6:,.1f} MFLOPs"

    def smaller_than(self, other: "ModelCost") -> bool:
        return self.parameters < other.parameters and self.flops < other.flops


def model_cost(model: nn.Module, input_shape: tuple[int, int, int]) -> ModelCost:
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
    return ModelCost(sum(p.numel() for p in model.parameters()), int(counter.get_total_flops()))


def registry_cost(name: str, input_shape: tuple[int, int, int], num_classes: int) -> ModelCost:
    channels, height, _ = input_shape
    return model_cost(create_model(name, in_channels=channels, num_classes=num_classes, image_size=height), input_shape)


@dataclass(frozen=True)
class StudentChoice:
    name: str
    cost: ModelCost
    teacher_cost: ModelCost
    note: str | None = None  # what the summary says: a usual student passed over, or a named one not smaller


def choose_student(
    named: str | None,
    teacher: nn.Module,
    teacher_arch: str | None,
    input_shape: tuple[int, int, int],
    num_classes: int,
    teacher_label: str,
) -> StudentChoice:
    """The student for this teacher: `named` (the user's --student) as given, with a note when it is not
    smaller; otherwise the usual student or the first smaller one on the ladder; PipelineError when none is."""
    teacher_cost = model_cost(teacher, input_shape)
    if named:
        cost = registry_cost(named, input_shape, num_classes)
        note = None
        if not cost.smaller_than(teacher_cost):
            note = (
                f"--student {named} ({cost.describe()}) is not smaller than the teacher {teacher_label} "
                f"({teacher_cost.describe()}): the student may be no cheaper to run"
            )
        return StudentChoice(named, cost, teacher_cost, note)
    small = input_shape[1] <= SMALL_IMAGE_MAX_PX
    usual = USUAL_STUDENTS.get(teacher_arch or "", "resnet14" if small else "resnet18")
    ladder = SMALL_IMAGE_LADDER if small else LARGE_IMAGE_LADDER
    tried = []
    for name in dict.fromkeys((usual, *ladder)):
        if name == teacher_arch:
            continue
        cost = registry_cost(name, input_shape, num_classes)
        if cost.smaller_than(teacher_cost):
            note = None
            if name != usual:
                note = (
                    f"default student {name} ({cost.describe()}): the usual one, {usual}, is not smaller than the "
                    f"teacher {teacher_label} ({teacher_cost.describe()})"
                )
            return StudentChoice(name, cost, teacher_cost, note)
        tried.append(name)
    raise PipelineError(
        f"no registered student is smaller than the teacher {teacher_label} ({teacher_cost.describe()}; tried "
        f"{', '.join(tried)}): compress the teacher itself (`pipeline drop`, `pipeline quantize`) or name a "
        "student with --student"
    )
