"""DAFL generator training against a frozen teacher: L_G = L_oh + a*L_a + b*L_ie (+ g*L_bn, our addition).

The `paper` preset is the authors' MNIST setting; `fast` (default) adds BN-statistics matching, which
makes the generator useful within minutes on a CPU for teachers with BatchNorm.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from pipeline.synthesize.generator import Generator
from pipeline.synthesize.losses import (BatchNormStatistics, FeatureTap, activation_loss, information_entropy_loss,
                                        one_hot_loss)


@dataclass(frozen=True)
class DaflConfig:
    preset: str = "fast"
    latent_dim: int = 100
    generator_width: int = 64  # the paper's 128 costs ~4x the CPU time per step
    lr_generator: float = 1e-3
    alpha_activation: float = 0.1
    beta_entropy: float = 5.0
    gamma_bn: float = 1.0  # 0 = the paper's loss

    @classmethod
    def preset_config(cls, name: str) -> "DaflConfig":
        if name == "paper":  # Chen et al., MNIST: Adam lr_G 0.2, alpha 0.1, beta 5, no BN term
            return cls(preset="paper", generator_width=128, lr_generator=0.2, gamma_bn=0.0)
        if name == "fast":
            return cls()
        raise ValueError(f"unknown DAFL preset {name!r} (paper, fast)")


class DaflObjective:
    """Computes the generator loss for one batch; owns the hooks on the teacher."""

    def __init__(self, teacher: nn.Module, config: DaflConfig):
        self.teacher, self.config = teacher, config
        self.features = FeatureTap(teacher)
        self.bn_stats = BatchNormStatistics(teacher) if config.gamma_bn > 0 else None

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        logits = self.teacher(images)
        terms = {"one_hot": one_hot_loss(logits), "entropy": information_entropy_loss(logits)}
        loss = terms["one_hot"] + self.config.beta_entropy * terms["entropy"]
        if self.features.available and self.features.features is not None:
            terms["activation"] = activation_loss(self.features.features)
            loss = loss + self.config.alpha_activation * terms["activation"]
        if self.bn_stats is not None and self.bn_stats.layers:
            terms["bn"] = self.bn_stats.pop_loss()
            loss = loss + self.config.gamma_bn * terms["bn"]
        return loss, logits, {name: float(value.detach()) for name, value in terms.items()}

    def close(self) -> None:
        self.features.close()
        if self.bn_stats is not None:
            self.bn_stats.close()


def make_generator(image_size: int, channels: int, config: DaflConfig) -> Generator:
    return Generator(image_size, channels, latent_dim=config.latent_dim, width=config.generator_width)


def cosine_lr(base_lr: float, fraction_done: float) -> float:
    """Cosine decay over the wall-time budget (the budget is time, not steps)."""
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, fraction_done))))


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model
