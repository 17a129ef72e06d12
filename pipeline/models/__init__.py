"""Model registry. Importing this package registers every architecture."""

from pipeline.models import cifar_resnet, lenet, torchvision_models  # noqa: F401  (registration side effects)
from pipeline.models.registry import (
    ModelSpec,
    create_model,
    get_spec,
    list_models,
    register_model,
)

__all__ = ["ModelSpec", "create_model", "get_spec", "list_models", "register_model", "default_student"]

# Which smaller architecture distils a teacher by default.
_DEFAULT_STUDENTS = {
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


def default_student(teacher_arch: str | None, input_shape: tuple[int, int, int]) -> str:
    """Student architecture for a teacher; unknown teachers (TorchScript, .pt2) get a size-appropriate ResNet."""
    if teacher_arch in _DEFAULT_STUDENTS:
        return _DEFAULT_STUDENTS[teacher_arch]
    return "resnet14" if input_shape[1] <= 64 else "resnet18"
