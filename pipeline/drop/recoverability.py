"""Recoverability (PRACTISE): how well a model with some blocks dropped can be brought back by its adapters
alone. The adapters are trained briefly (everything else frozen) to imitate the teacher's pre-pooling
features on the transfer set; the remaining feature MSE, on held-back transfer images, is R."""

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.drop.adapters import adapter_parameters, insert_adapters
from pipeline.drop.blocks import without_blocks
from pipeline.kd import FeatureTap


@dataclass(frozen=True)
class RecoverabilitySettings:
    steps: int = 60  # adapter-only training steps per candidate ("briefly")
    batch_size: int = 64
    lr: float = 0.01  # Adam; only a few 1x1 matrices near the identity move
    train_images: int = 1024
    eval_images: int = 256

    def to_dict(self) -> dict:
        return asdict(self)


def adapted_without(model: nn.Module, dropped: list[str], input_shape) -> nn.Module:
    """`model` without `dropped`, with identity adapters at the gaps (a new model)."""
    pruned = without_blocks(model, dropped)
    insert_adapters(pruned, tuple(input_shape))
    return pruned


class RecoverabilityProbe:
    """Holds the teacher's features on a fixed train/held-back split so each candidate costs only its own training."""

    def __init__(
        self, teacher: nn.Module, images: torch.Tensor, input_shape, settings: RecoverabilitySettings, seed: int = 0
    ):
        self.teacher, self.input_shape, self.settings = teacher, tuple(input_shape), settings
        self.rng = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(images), generator=self.rng)
        held = min(settings.eval_images, max(1, len(images) // 5))
        self.eval_images = images[order[:held]]
        self.train_images = images[order[held : held + settings.train_images]]
        if len(self.train_images) == 0:
            self.train_images = self.eval_images
        self.train_features = self._teacher_features(self.train_images)
        self.eval_features = self._teacher_features(self.eval_images)

    @torch.no_grad()
    def _teacher_features(self, images: torch.Tensor) -> torch.Tensor:
        tap = FeatureTap(self.teacher)
        try:
            self.teacher.eval()
            return torch.cat([tap(images[i : i + 256])[0] for i in range(0, len(images), 256)])
        finally:
            tap.close()

    def adapted(self, dropped: list[str]) -> nn.Module:
        return adapted_without(self.teacher, dropped, self.input_shape)

    def __call__(self, dropped: list[str]) -> float:
        pruned = self.adapted(dropped)
        pruned.eval()  # BatchNorm keeps the teacher's statistics
        for parameter in pruned.parameters():
            parameter.requires_grad_(False)
        adapters = adapter_parameters(pruned)
        for parameter in adapters:
            parameter.requires_grad_(True)
        optimizer = torch.optim.Adam(adapters, lr=self.settings.lr)
        tap = FeatureTap(pruned)
        try:
            for _ in range(self.settings.steps):
                index = torch.randint(len(self.train_images), (self.settings.batch_size,), generator=self.rng)
                loss = F.mse_loss(tap(self.train_images[index])[0], self.train_features[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                remaining = torch.cat(
                    [tap(self.eval_images[i : i + 256])[0] for i in range(0, len(self.eval_images), 256)]
                )
            return float(F.mse_loss(remaining, self.eval_features))
        finally:
            tap.close()
