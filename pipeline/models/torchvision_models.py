"""torchvision ImageNet architectures (random weights: nothing is downloaded), with the input
channels and class count as parameters."""

import torch.nn as nn
import torchvision

from pipeline.models.registry import register_model


def _adapt_stem(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    if in_channels == conv.in_channels:
        return conv
    return nn.Conv2d(
        in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None
    )


def _register_resnet(name: str) -> None:
    factory = getattr(torchvision.models, name)

    @register_model(
        name,
        family="torchvision-resnet",
        default_input=(3, 224, 224),
        default_classes=1000,
        description=f"torchvision {name}",
    )
    def build(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
        model = factory(weights=None, num_classes=num_classes)
        model.conv1 = _adapt_stem(model.conv1, in_channels)
        return model


for _name in ("resnet18", "resnet34", "resnet50"):
    _register_resnet(_name)


@register_model(
    "mobilenet_v2",
    family="mobilenet",
    default_input=(3, 224, 224),
    default_classes=1000,
    description="torchvision MobileNetV2",
)
def mobilenet_v2(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=num_classes)
    model.features[0][0] = _adapt_stem(model.features[0][0], in_channels)
    return model
