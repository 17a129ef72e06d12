"""Shared pieces of the wall-time-budgeted training loops: periodic resume checkpoints and seeding."""

import math
import os
import random
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from pipeline import failpoints
from pipeline.fileio import atomic_torch_save

RESUME_FILE = "resume.pt"
RESUME_EVERY_S = 20.0


def resume_every_s() -> float:
    """Seconds between checkpoints. Tests shorten it (PIPELINE_RESUME_EVERY_S) to exercise resume within a smoke
    budget; read when a loop runs, not at import, so a process forked after the import still sees its own."""
    return float(os.environ.get("PIPELINE_RESUME_EVERY_S", RESUME_EVERY_S))


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


class ResumableLoop:
    """Tracks budget time across interruptions: the elapsed time and all states are checkpointed
    into the stage's work folder every `resume_every_s()` seconds and restored on the next attempt.
    With `steps` the loop is bounded by steps instead of wall time (`--steps`): the same seed then gives
    bit-identical weights on the same machine, interrupted and resumed or not."""

    def __init__(self, workdir: Path, seconds: float, states: dict, steps: int | None = None):
        self.path = Path(workdir) / RESUME_FILE
        self.seconds = seconds
        self.steps = steps
        self.states = states  # name -> object with state_dict()/load_state_dict()
        self.step = 0
        self._elapsed_before = 0.0
        self.resumed = False
        if self.path.exists():
            saved = torch.load(self.path, weights_only=False)  # our own file, written by this class
            for name, state in self.states.items():
                state.load_state_dict(saved["states"][name])
            self.step, self._elapsed_before = saved["step"], saved["elapsed"]
            torch.set_rng_state(saved["torch_rng"])
            self.resumed = True
        self._start = time.monotonic()
        self._last_save = self._start
        self._excluded = 0.0
        self._agreed_elapsed: float | None = None

    @property
    def elapsed(self) -> float:
        return self._elapsed_before + time.monotonic() - self._start - self._excluded

    @contextmanager
    def paused(self):
        """Time spent inside (e.g. evaluating on a labelled set for the accuracy curve) is not budget time."""
        start = time.monotonic()
        try:
            yield
        finally:
            self._excluded += time.monotonic() - start

    @property
    def fraction_done(self) -> float:
        """From the clock reading of the last running() check (rank 0's under torchrun, so LR schedules agree)."""
        if self.steps is not None:
            return min(1.0, self.step / self.steps) if self.steps > 0 else 1.0
        elapsed = self._agreed_elapsed if self._agreed_elapsed is not None else self.elapsed
        return min(1.0, elapsed / self.seconds) if self.seconds > 0 else 1.0

    def running(self) -> bool:
        """Rank 0's clock decides under torchrun, so every rank takes the same number of steps."""
        from pipeline import distributed

        if self.steps is not None:
            return self.step < self.steps
        self._agreed_elapsed = float(distributed.broadcast_object(self.elapsed))
        return self._agreed_elapsed < self.seconds

    def end_step(self) -> None:
        self.step += 1
        # "<stage>:step-N": killed after step N's work, before its checkpoint (that step is redone on resume)
        failpoints.hit(f"{self.path.parent.name.removeprefix('.partial-')}:step-{self.step}")
        if time.monotonic() - self._last_save >= resume_every_s():
            self.save()

    def save(self) -> None:
        from pipeline import distributed

        if not distributed.is_main():
            return
        atomic_torch_save(
            {
                "states": {name: state.state_dict() for name, state in self.states.items()},
                "step": self.step,
                "elapsed": self.elapsed,
                "torch_rng": torch.get_rng_state(),
            },
            self.path,
        )
        self._last_save = time.monotonic()

    def finish(self) -> None:
        self.path.unlink(missing_ok=True)


def cosine_scale(fraction_done: float) -> float:
    """Cosine decay factor over the wall-time budget (the budget is time, not steps)."""
    return 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, fraction_done))))


def freeze(model):
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


class GeneratorState:
    """Adapter so a torch.Generator can sit in ResumableLoop's states."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def state_dict(self):
        return self.generator.get_state()

    def load_state_dict(self, state):
        self.generator.set_state(state)
