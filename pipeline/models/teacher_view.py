"""A frozen teacher and its input contract, as every data-free technique sees it: synthesizers, the student's
distillation, drop's recovery and the budget search. Converts between normalised model inputs, pixels in 0..1
and the uint8 pixels a transfer set stores."""

from dataclasses import dataclass

import torch
import torch.nn as nn

from pipeline.preprocess import Preprocess


@dataclass
class TeacherView:
    """What a synthesizer may know about the teacher: the frozen model and its input contract."""

    model: nn.Module
    preprocess: Preprocess
    num_classes: int
    device: torch.device

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.preprocess.input_shape

    def pixel_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Valid normalised range per channel (pixels 0..1), shaped [1, C, 1, 1]."""
        mean = torch.tensor(self.preprocess.mean, device=self.device).view(1, -1, 1, 1)
        std = torch.tensor(self.preprocess.std, device=self.device).view(1, -1, 1, 1)
        return (0 - mean) / std, (1 - mean) / std

    def to_pixels(self, images: torch.Tensor) -> torch.Tensor:
        low, high = self.pixel_bounds()
        return ((images - low) / (high - low)).clamp(0, 1)

    def from_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        low, high = self.pixel_bounds()
        return low + pixels * (high - low)

    def to_uint8(self, images: torch.Tensor) -> torch.Tensor:
        return (self.to_pixels(images.detach()) * 255).round().to(torch.uint8)

    def from_uint8(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.from_pixels(pixels.to(self.device).float() / 255)
