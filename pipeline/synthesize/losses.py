"""Losses that read a frozen teacher: DAFL's three terms and DeepInversion's BN-statistics term.

Everything is attached with forward hooks, so it works on any nn.Module teacher (registry models,
torchvision, pickled modules). Teachers without module structure (TorchScript, torch.export
graphs) simply provide no feature tap / no BN layers and those terms drop out.
"""

from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F


def last_linear(model: nn.Module) -> nn.Linear | None:
    found = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            found = module
    return found


class FeatureTap:
    """Captures the input of the classifier's last Linear layer: DAFL's pre-FC features f_T."""

    def __init__(self, model: nn.Module):
        self.features: torch.Tensor | None = None
        layer = last_linear(model) if isinstance(model, nn.Module) else None
        self._handle = layer.register_forward_hook(self._hook) if layer is not None else None

    @property
    def available(self) -> bool:
        return self._handle is not None

    def _hook(self, module, inputs, output):
        self.features = inputs[0]

    def close(self) -> None:
        if self._handle is not None:
            self._handle.remove()


class BatchNormStatistics:
    """Sum over BN layers of ||mean(x) - running_mean|| + ||var(x) - running_var|| (Yin et al. 2020)."""

    def __init__(self, model: nn.Module):
        self._terms: list[torch.Tensor] = []
        self._recording = False  # only forwards inside `recording()` count (the teacher is also used elsewhere)
        self._handles = [
            m.register_forward_hook(self._hook)
            for m in model.modules()
            if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None
        ]

    @property
    def layers(self) -> int:
        return len(self._handles)

    @contextmanager
    def recording(self):
        self._terms, self._recording = [], True
        try:
            yield self
        finally:
            self._recording = False

    def _hook(self, module: nn.BatchNorm2d, inputs, output):
        if not self._recording:
            return
        x = inputs[0]
        mean = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3), unbiased=False)
        self._terms.append(torch.norm(mean - module.running_mean, 2) + torch.norm(var - module.running_var, 2))

    def pop_loss(self) -> torch.Tensor:
        """The loss accumulated since the last call (one teacher forward)."""
        loss = torch.stack(self._terms).sum() if self._terms else torch.zeros(())
        self._terms = []
        return loss

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def one_hot_loss(logits: torch.Tensor) -> torch.Tensor:
    """L_oh: the teacher should be confident, i.e. agree with its own argmax."""
    return F.cross_entropy(logits, logits.argmax(1))


def activation_loss(features: torch.Tensor) -> torch.Tensor:
    """L_a = -mean|f_T|: real images excite the teacher's features strongly."""
    return -features.abs().mean()


def information_entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """L_ie = -H(mean softmax): pushes the batch towards a balanced class distribution."""
    mean_probability = F.softmax(logits, dim=1).mean(0)
    return (mean_probability * torch.log(mean_probability + 1e-8)).sum()


def first_conv(model: nn.Module) -> nn.Conv2d | None:
    return next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)


class OutputTap:
    """Keeps the output of one module from the last forward (e.g. the first conv, for Wang 2021's activation term)."""

    def __init__(self, module: nn.Module | None):
        self.output: torch.Tensor | None = None
        self._handle = module.register_forward_hook(self._hook) if module is not None else None

    def _hook(self, module, inputs, output):
        self.output = output

    def close(self) -> None:
        if self._handle is not None:
            self._handle.remove()


def disagreement_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Adversarial term (Fang et al.): minus the student-teacher KL, only where both still agree on the class,
    so the synthesizer seeks the student's blind spots without drifting off the teacher's decision regions."""
    agree = (student_logits.argmax(1) == teacher_logits.argmax(1)).float()
    kl = F.kl_div(F.log_softmax(student_logits, 1), F.softmax(teacher_logits, 1), reduction="none").sum(1)
    return -(kl * agree).mean()


@contextmanager
def student_as_critic(student: nn.Module):
    """The student judges synthetic images without learning from them: eval-mode BN (its running statistics must
    not move) and no parameter gradients (saves a third of the backward pass)."""
    was_training = student.training
    flags = [p.requires_grad for p in student.parameters()]
    student.eval()
    for parameter in student.parameters():
        parameter.requires_grad_(False)
    try:
        yield student
    finally:
        for parameter, flag in zip(student.parameters(), flags):
            parameter.requires_grad_(flag)
        student.train(was_training)


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Image prior of DeepInversion: mean absolute difference of neighbouring pixels."""
    return (images[..., 1:, :] - images[..., :-1, :]).abs().mean() + (
        images[..., :, 1:] - images[..., :, :-1]
    ).abs().mean()
