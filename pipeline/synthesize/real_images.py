"""Real images instead of synthesis: a few per class (few-shot) or a whole out-of-domain folder.

Labels are ignored — the student learns the teacher's outputs on these images (KD), so unlabelled or
out-of-domain pictures work too. Each step emits a batch of randomly shifted copies, so a handful of
images gives the student more than a handful of views.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.data.datasets import LabelledImages, fashion_mnist_split, image_folder
from pipeline.errors import PipelineError
from pipeline.synthesize.base import Synthesizer, TeacherView, register_synthesizer


def load_real_images(source: str, teacher: TeacherView, per_class: int, seed: int) -> LabelledImages:
    """`source`: an image folder (<dir>/<class>/<image>) or 'fmnist-train' (Fashion-MNIST's training split)."""
    if not source:
        raise PipelineError("the images synthesizer needs a folder: --synth-option path=DIR (and per_class=N)")
    if source.lower() in {"fmnist-train", "fashion-mnist-train"}:
        data = fashion_mnist_split("train", teacher.preprocess)
        if per_class:
            generator = torch.Generator().manual_seed(seed)
            order = torch.randperm(len(data), generator=generator)
            chosen = torch.cat([order[data.labels[order] == c][:per_class] for c in range(len(data.classes))])
            data = LabelledImages(data.name, data.images[chosen], data.labels[chosen], data.classes)
        return data
    return image_folder(source, teacher.preprocess, per_class=per_class or None)


@register_synthesizer("images", "real images from a folder (N per class or all; labels unused), randomly shifted")
class RealImages(Synthesizer):
    defaults = {"path": "", "per_class": 0, "batch_size": 128, "shift": 2}

    def __init__(self, teacher: TeacherView, options: dict, seed: int):
        super().__init__(teacher, options, seed)
        self.images = load_real_images(options["path"], teacher, options["per_class"], seed).images
        self.emitted_originals = False

    @property
    def count(self) -> int:
        return len(self.images)

    def step(self, student: nn.Module | None = None, lr_scale: float = 1.0) -> torch.Tensor:
        if not self.emitted_originals:  # the images themselves first, then shifted views
            self.emitted_originals = True
            return self.images.to(self.teacher.device)
        index = torch.randint(len(self.images), (self.options["batch_size"],), generator=self.rng)
        return random_shift(self.images[index], self.options["shift"], self.rng).to(self.teacher.device)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "emitted_originals": self.emitted_originals}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.emitted_originals = state["emitted_originals"]


def random_shift(images: torch.Tensor, pixels: int, rng: torch.Generator) -> torch.Tensor:
    """Translate each image by up to `pixels` in x and y (edge padding), the classic small-image augmentation."""
    if pixels <= 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (pixels,) * 4, mode="replicate")
    dy = torch.randint(2 * pixels + 1, (n, 1, 1), generator=rng)
    dx = torch.randint(2 * pixels + 1, (n, 1, 1), generator=rng)
    rows = (dy + torch.arange(h).view(1, h, 1)).expand(n, h, w)  # one gather for the whole batch
    cols = (dx + torch.arange(w).view(1, 1, w)).expand(n, h, w)
    return padded[torch.arange(n).view(n, 1, 1), :, rows, cols].permute(0, 3, 1, 2).contiguous()


def random_shift_flip(images: torch.Tensor, pixels: int, rng: torch.Generator) -> torch.Tensor:
    """random_shift, then a random half mirrored left-right; differentiable, so synthesizers can use it too."""
    shifted = random_shift(images, pixels, rng)
    flip = (torch.rand(len(images), generator=rng) < 0.5).to(images.device).view(-1, 1, 1, 1)
    return torch.where(flip, shifted.flip(-1), shifted)
