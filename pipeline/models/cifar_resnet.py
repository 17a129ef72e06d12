"""Small BN ResNets for 28-32 px inputs (He et al. 2016, CIFAR layout: 3x3 stem, no max-pool).

Stages are `layer1..layerN` and the classifier is `fc`, as in torchvision, so block dropping
and feature taps treat both families the same way.
"""

import torch
import torch.nn as nn

from pipeline.models.registry import register_model


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            # 1x1 projection shortcut: the block's shape change survives if its body is dropped.
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class CifarResNet(nn.Module):
    def __init__(self, blocks_per_stage, widths, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        in_planes = widths[0]
        self.stage_names = []
        for index, (count, width) in enumerate(zip(blocks_per_stage, widths)):
            stride = 1 if index == 0 else 2
            blocks = []
            for block_index in range(count):
                blocks.append(BasicBlock(in_planes, width, stride if block_index == 0 else 1))
                in_planes = width
            name = f"layer{index + 1}"
            setattr(self, name, nn.Sequential(*blocks))
            self.stage_names.append(name)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(features), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


_LAYOUTS = {
    # name: (blocks per stage, widths, description)
    "resnet8": ((1, 1, 1), (16, 32, 64), "CIFAR ResNet-8"),
    "resnet14": ((2, 2, 2), (16, 32, 64), "CIFAR ResNet-14 (default student of resnet20)"),
    "resnet20": ((3, 3, 3), (16, 32, 64), "CIFAR ResNet-20 (embedded default teacher)"),
    "resnet32": ((5, 5, 5), (16, 32, 64), "CIFAR ResNet-32"),
    "resnet18n": ((2, 2, 2, 2), (16, 32, 64, 128), "narrow ResNet-18 layout for small images"),
    "resnet34n": ((3, 4, 6, 3), (16, 32, 64, 128), "narrow ResNet-34 layout [3,4,6,3] for small images"),
}


def _register(name: str, blocks, widths, description: str) -> None:
    @register_model(name, family="cifar-resnet", default_input=(1, 28, 28), default_classes=10, description=description)
    def build(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
        return CifarResNet(blocks, widths, in_channels, num_classes)


for _name, (_blocks, _widths, _description) in _LAYOUTS.items():
    _register(_name, _blocks, _widths, _description)
