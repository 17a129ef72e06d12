"""Real images instead of synthesis: a few per class (few-shot) or a whole out-of-domain folder.

Labels are ignored — the student learns the teacher's outputs on these images (KD), so unlabelled or
out-of-domain pictures work too. Each step emits a batch of randomly shifted copies, so a handful of
images gives the student more than a handful of views.
"""

import torch
import torch.nn as nn

from pipeline.data.datasets import LabelledImages, fashion_mnist_split, image_folder
from pipeline.errors import PipelineError
from pipeline.kd import random_shift
from pipeline.models.teacher_view import TeacherView
from pipeline.synthesize.base import Synthesizer, register_synthesizer


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
