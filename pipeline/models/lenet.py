"""LeNet-5 as in DAFL's public code (conv 6-16-120, fc 84), with BatchNorm after each convolution
so that BN-statistics synthesis applies; `-half` halves every width (DAFL's student)."""

import torch
import torch.nn as nn

from pipeline.models.registry import register_model


class LeNet5(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: float = 1.0):
        super().__init__()
        c1, c2, c3, f1 = (max(1, int(round(w * width))) for w in (6, 16, 120, 84))
        # padding=2 on conv1 makes a 28x28 input behave like the paper's 32x32 one.
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=2, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, bias=False),
            nn.BatchNorm2d(c2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 5, bias=False),
            nn.BatchNorm2d(c3),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)  # 1x1 already at 28/32 px; keeps other sizes working
        self.classifier = nn.Sequential(nn.Linear(c3, f1), nn.ReLU(inplace=True), nn.Linear(f1, num_classes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(features), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


@register_model(
    "lenet5",
    family="lenet",
    default_input=(1, 28, 28),
    default_classes=10,
    description="LeNet-5 with BatchNorm (DAFL/ZSKD teacher)",
)
def lenet5(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return LeNet5(in_channels, num_classes, width=1.0)


@register_model(
    "lenet5-half",
    family="lenet",
    default_input=(1, 28, 28),
    default_classes=10,
    description="LeNet-5 at half width (DAFL student)",
)
def lenet5_half(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return LeNet5(in_channels, num_classes, width=0.5)
