"""Recoverability (PRACTISE): how well a model with some blocks dropped can be brought back by its adapters
alone. The adapters are trained briefly (everything else frozen) to imitate the teacher's pre-pooling
features on the transfer set; the remaining feature MSE, on held-back transfer images, is R.

With a time allowance (`seconds`, for all the probes of one selection) the probe sizes itself before the first
candidate: it times one adapter step and one pass over the held-back images, then gives every probe the same
number of steps (and, when even the passes would not fit, fewer held-back images), so the candidates stay
comparable. At 224 px on a CPU an adapter step costs seconds and the allowance may buy none: R is then the
feature error of the bare drop with identity adapters (0 steps), and the selection trace says so."""

import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.data.transfer_set import take
from pipeline.drop.adapters import adapter_parameters, insert_adapters
from pipeline.drop.blocks import without_blocks
from pipeline.kd import FeatureTap
from pipeline.process_memory import inference_batch
from pipeline.progress import log
from pipeline.stage import optional_field

MIN_EVAL_IMAGES = 32  # held-back images a time-bounded probe keeps at least


@dataclass(frozen=True)
class RecoverabilitySettings:
    steps: int = 60  # adapter-only training steps per candidate ("briefly")
    batch_size: int = 64
    lr: float = 0.01  # Adam; only a few 1x1 matrices near the identity move
    train_images: int = 1024
    eval_images: int = 256
    seconds: float | None = optional_field()  # for all the probes of one selection; None: `steps` each

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
        self.chunk = inference_batch(self.input_shape)  # images per no-grad forward (256 at 28 px, 8 at 224)
        order = torch.randperm(len(images), generator=self.rng)
        held = min(settings.eval_images, max(1, len(images) // 5))
        self.eval_images = take(images, order[:held])
        self.train_images = take(images, order[held : held + settings.train_images])
        if len(self.train_images) == 0:
            self.train_images = self.eval_images
        self.train_features = self._teacher_features(self.train_images)
        self.eval_features = self._teacher_features(self.eval_images)
        self.steps = settings.steps
        self.sizing: dict | None = None  # how a time allowance was spread (fit_to)

    def fit_to(self, probes: int, candidate: list[str]) -> dict | None:
        """Spread `settings.seconds` over about `probes` probes (timed on `candidate`); returns the record."""
        seconds = self.settings.seconds
        if seconds is None or probes <= 0:
            return None
        start = time.perf_counter()
        pruned = self.adapted(
            candidate
        )  # each probe builds its model too (a copy of a 224-px net: a fraction of a second)
        build_s = time.perf_counter() - start
        step_s, pass_s = self._step_s(pruned), self._pass_s(pruned)
        per_probe = seconds / probes - build_s
        eval_count = len(self.eval_images)
        if pass_s > per_probe and eval_count > MIN_EVAL_IMAGES:  # the passes alone would overrun: fewer images
            eval_count = max(MIN_EVAL_IMAGES, int(eval_count * per_probe / pass_s))
            pass_s *= eval_count / len(self.eval_images)
            self.eval_images = take(self.eval_images, slice(0, eval_count))
            self.eval_features = self.eval_features[:eval_count]
        self.steps = max(0, min(self.settings.steps, math.floor((per_probe - pass_s) / step_s)))
        self.sizing = {
            "seconds": seconds,
            "probes_expected": probes,
            "adapter_step_s": round(step_s, 4),
            "build_s": round(build_s, 4),
            "eval_pass_s": round(pass_s, 4),
            "steps": self.steps,
            "steps_configured": self.settings.steps,
            "eval_images": eval_count,
        }
        if self.steps < self.settings.steps:
            log(
                f"drop: recoverability probes: {self.steps} adapter steps each (of {self.settings.steps}) and "
                f"{eval_count} held-back images: ~{probes} probes in {seconds:.0f} s at {step_s:.2f} s a step"
                + (" (R is the bare drop's feature error, identity adapters)" if self.steps == 0 else "")
            )
        return self.sizing

    def _step_s(self, pruned: nn.Module) -> float:
        adapters = self._trainable_adapters(pruned)
        optimizer = torch.optim.Adam(adapters, lr=0.0)  # timed, not trained: lr 0 leaves the adapters as they are
        tap = FeatureTap(pruned)
        try:
            index = torch.arange(min(self.settings.batch_size, len(self.train_images)))
            for _ in range(2):  # the second step is timed: the first pays one-off costs (kernel choice, allocator)
                start = time.perf_counter()
                loss = F.mse_loss(tap(self.train_images[index])[0], self.train_features[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            return time.perf_counter() - start
        finally:
            tap.close()

    def _pass_s(self, pruned: nn.Module) -> float:
        self._remaining(pruned)  # warm, as above
        start = time.perf_counter()
        self._remaining(pruned)
        return time.perf_counter() - start

    @torch.no_grad()
    def _teacher_features(self, images: torch.Tensor) -> torch.Tensor:
        tap = FeatureTap(self.teacher)
        try:
            self.teacher.eval()
            return torch.cat([tap(images[i : i + self.chunk])[0] for i in range(0, len(images), self.chunk)])
        finally:
            tap.close()

    def adapted(self, dropped: list[str]) -> nn.Module:
        return adapted_without(self.teacher, dropped, self.input_shape)

    def _trainable_adapters(self, pruned: nn.Module) -> list[nn.Parameter]:
        pruned.eval()  # BatchNorm keeps the teacher's statistics
        for parameter in pruned.parameters():
            parameter.requires_grad_(False)
        adapters = adapter_parameters(pruned)
        for parameter in adapters:
            parameter.requires_grad_(True)
        return adapters

    @torch.no_grad()
    def _remaining(self, pruned: nn.Module) -> float:
        tap = FeatureTap(pruned)
        try:
            images, chunk = self.eval_images, self.chunk
            remaining = torch.cat([tap(images[i : i + chunk])[0] for i in range(0, len(images), chunk)])
        finally:
            tap.close()
        return float(F.mse_loss(remaining, self.eval_features))

    def __call__(self, dropped: list[str]) -> float:
        pruned = self.adapted(dropped)
        adapters = self._trainable_adapters(pruned)
        optimizer = torch.optim.Adam(adapters, lr=self.settings.lr)
        tap = FeatureTap(pruned)
        try:
            for _ in range(self.steps):
                index = torch.randint(len(self.train_images), (self.settings.batch_size,), generator=self.rng)
                loss = F.mse_loss(tap(self.train_images[index])[0], self.train_features[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        finally:
            tap.close()
        return self._remaining(pruned)
