"""Random-noise inputs: the floor every data-free method must beat (DAFL's 'random noise' baseline)."""

import torch
import torch.nn as nn

from pipeline.synthesize.base import Synthesizer, register_synthesizer


@register_synthesizer("noise", "random Gaussian-noise images (baseline / floor, not a method to deploy)")
class NoiseImages(Synthesizer):
    defaults = {"batch_size": 128, "pixel_std": 0.25}

    def step(self, student: nn.Module | None = None, lr_scale: float = 1.0) -> torch.Tensor:
        c, h, w = self.teacher.input_shape
        pixels = (0.5 + self.options["pixel_std"] * self.randn(self.options["batch_size"], c, h, w)).clamp(0, 1)
        return self.teacher.from_pixels(pixels)
