"""Architecture registry (timm-style): `@register_model` adds a builder; tests are parametrised over it."""

from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    family: str  # "lenet", "cifar-resnet", "torchvision-resnet", "mobilenet"
    default_input: tuple[int, int, int]  # (C, H, W)
    default_classes: int
    description: str = ""


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, *, family: str, default_input, default_classes: int, description: str = ""):
    def decorate(builder: Callable[..., nn.Module]):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelSpec(name, builder, family, tuple(default_input), default_classes, description)
        return builder

    return decorate


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise PipelineError(f"unknown architecture {name!r}; known: {', '.join(list_models())}") from None


def create_model(
    name: str, *, in_channels: int | None = None, num_classes: int | None = None, image_size: int | None = None
) -> nn.Module:
    """Build an architecture with random weights. Unset arguments take the architecture's defaults."""
    spec = get_spec(name)
    channels, height, _ = spec.default_input
    model = spec.builder(
        in_channels=in_channels or channels,
        num_classes=num_classes or spec.default_classes,
        image_size=image_size or height,
    )
    model.arch_name = name  # lets later stages tell which registry entry built a module
    return model
