"""Model registry. Importing this package registers every architecture."""

from pipeline.models import cifar_resnet, lenet, torchvision_models  # noqa: F401  (registration side effects)
from pipeline.models.registry import (
    ModelSpec,
    create_model,
    get_spec,
    list_models,
    register_model,
)

__all__ = ["ModelSpec", "create_model", "get_spec", "list_models", "register_model"]
