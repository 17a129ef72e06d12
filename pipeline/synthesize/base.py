"""One interface for every way of producing a transfer set from a frozen teacher.

A synthesizer is stepped by a wall-time loop: each `step()` does a little optimisation and may return
a batch of new images (normalised, as the teacher expects). `fit(seconds)` and `sample(n)` are the
stand-alone use; the distill stage instead interleaves `step(student)` with student updates, which is
what the adversarial variants need. All state that must survive an interruption is in `state_dict()`.
"""

from abc import ABC, abstractmethod
from typing import Callable

import torch
import torch.nn as nn

from pipeline.errors import PipelineError
from pipeline.models.teacher_view import TeacherView


class Synthesizer(ABC):
    name: str = ""
    uses_student = False  # True: step() takes the student for an adversarial (disagreement) term
    defaults: dict = {}  # every option the method reads, with its default
    presets: dict[str, dict] = {}  # named option sets, e.g. DAFL's "paper"

    def __init__(self, teacher: TeacherView, options: dict, seed: int):
        self.teacher, self.options = teacher, options
        self.rng = torch.Generator(device="cpu").manual_seed(seed)

    @abstractmethod
    def step(self, student: nn.Module | None = None, lr_scale: float = 1.0) -> torch.Tensor | None:
        """One unit of synthesis work; returns new normalised images [B, C, H, W] or None (not ready yet)."""

    def state_dict(self) -> dict:
        return {"rng": self.rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.rng.set_state(state["rng"])

    def describe(self) -> dict:
        return {"name": self.name, **self.options}

    def fit(self, seconds: float, keep: Callable[[torch.Tensor], None]) -> int:
        """Stand-alone synthesis for `seconds`; each new batch goes to `keep`. Returns the step count."""
        import time

        end, steps = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            images = self.step()
            if images is not None:
                keep(images)
            steps += 1
        return steps

    def sample(self, n: int) -> torch.Tensor:
        """n fresh images; methods without a generator step until they have produced enough."""
        produced, total = [], 0
        while total < n:
            images = self.step()
            if images is not None:
                produced.append(images)
                total += len(images)
        return torch.cat(produced)[:n]

    def close(self) -> None:
        """Remove hooks placed on the teacher."""

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=self.rng).to(self.teacher.device)

    def randint(self, high: int, n: int) -> torch.Tensor:
        return torch.randint(high, (n,), generator=self.rng).to(self.teacher.device)


SYNTHESIZERS: dict[str, tuple[type[Synthesizer], str]] = {}


def register_synthesizer(name: str, description: str):
    def decorate(cls: type[Synthesizer]) -> type[Synthesizer]:
        cls.name = name
        SYNTHESIZERS[name] = (cls, description)
        return cls

    return decorate


def list_synthesizers() -> dict[str, str]:
    _import_methods()
    return {name: description for name, (_, description) in SYNTHESIZERS.items()}


def resolve_options(name: str, preset: str | None = None, overrides: dict | None = None) -> dict:
    """defaults <- preset <- user overrides; unknown names fail early, in one line."""
    cls = synthesizer_class(name)
    options = dict(cls.defaults)
    if preset:
        if preset not in cls.presets:
            raise PipelineError(
                f"synthesizer {name!r} has no preset {preset!r} (presets: {', '.join(cls.presets) or 'none'})"
            )
        options.update(cls.presets[preset])
    for key, value in (overrides or {}).items():
        if key not in cls.defaults:
            raise PipelineError(
                f"synthesizer {name!r} has no option {key!r} (options: {', '.join(sorted(cls.defaults))})"
            )
        options[key] = type(cls.defaults[key])(value) if cls.defaults[key] is not None else value
    return options


def synthesizer_class(name: str) -> type[Synthesizer]:
    _import_methods()
    if name not in SYNTHESIZERS:
        raise PipelineError(f"unknown synthesizer {name!r}; choose one of {', '.join(SYNTHESIZERS)}")
    return SYNTHESIZERS[name][0]


def create_synthesizer(name: str, teacher: TeacherView, options: dict, seed: int) -> Synthesizer:
    return synthesizer_class(name)(teacher, options, seed)


def _import_methods() -> None:
    from pipeline.synthesize import bn_inversion, dafl, noise, real_images, soft_target  # noqa: F401  (registration)
