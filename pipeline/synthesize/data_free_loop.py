"""The data-free training loop shared by `synthesize` (no student) and `distill` (student + synthesizer).

One iteration: the synthesizer takes a step (with the student as critic when it has an adversarial term);
new images are quantised to uint8, labelled by the teacher and added to the transfer-set pool; then the
student takes `kd_steps` KD steps on random pool batches (KL at temperature tau, optional pre-pooling
feature loss, optional EMA). Everything runs against a wall-time budget and is resumable; under torchrun
the student is DDP-wrapped and each rank synthesises its own images.
"""

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn

from pipeline import distributed
from pipeline.data.transfer_set import TransferSet
from pipeline.kd import FeatureProjection, augment_batch, kd_loss
from pipeline.models.teacher_view import TeacherView
from pipeline.process_memory import peak_rss_mb
from pipeline.progress import progress_bar
from pipeline.synthesize.base import Synthesizer
from pipeline.training import GeneratorState, ResumableLoop, cosine_scale


@dataclass(frozen=True)
class StudentTraining:
    """How the student learns from the pool (the `distill` half of the loop)."""

    batch_size: int = 128
    optimizer: str = "adam"  # adam | sgd
    lr: float = 2e-3
    weight_decay: float = 0.0
    temperature: float = 4.0
    # student steps per synthesizer step: synthesis costs far more than a student step, and each new image is
    # worth several passes (LeNet, 5-min runs with jitter: 8 steps +2.3 and +7.1 points over 3; 16 no better)
    kd_steps: int = 8
    feature_weight: float = 0.0  # MSE on pre-pooling features through a learned 1x1 projection; 0 = off
    ema: float = 0.0  # decay of an exponential moving average of the student's weights; 0 = off
    # shift/flip/mixup pool images, labelled by the teacher: +2 points in a 4-min LeNet A/B, but no clear
    # difference over 3 seeds x 12 min (benchmarks/results/datafree.md)
    augment: bool = True
    warmup_images: int = 0  # pool size before the student starts (0: as soon as there is an image)
    # KD batches drawn against the pool's class skew: weight 1 / (images of the teacher's class) ** class_balance.
    # 1 (every class equally often): +3.4 points over uniform (0) for the resnet18 pair, whose pool is skewed,
    # 0.5 in between (5-min builds on the validation split, benchmarks/results/datafree-resnet18-ablation.md)
    class_balance: float = 1.0


def make_optimizer(parameters, settings: StudentTraining) -> torch.optim.Optimizer:
    if settings.optimizer == "sgd":
        return torch.optim.SGD(
            parameters, lr=settings.lr, momentum=0.9, weight_decay=settings.weight_decay, nesterov=True
        )
    return torch.optim.Adam(parameters, lr=settings.lr, weight_decay=settings.weight_decay)


class DataFreeLoop:
    def __init__(
        self,
        teacher: TeacherView,
        synthesizer: Synthesizer | None,
        pool: TransferSet,
        student: nn.Module | None,
        settings: StudentTraining,
        seed: int,
        mix: Synthesizer | None = None,
        mix_every: int = 4,
    ):
        self.teacher, self.synthesizer, self.pool, self.settings = teacher, synthesizer, pool, settings
        # mixing: a few real images (an `images` synthesizer) join the pool every `mix_every` iterations
        self.mix, self.mix_every, self.iterations = mix, max(1, mix_every), 0
        self.rng = torch.Generator().manual_seed(seed)
        self.student = student
        self.ddp_student = student
        self.projection = None
        self.ema = None
        self.optimizer = None
        self.last: dict[str, float] = {}
        self.first_kd: float | None = None
        self.student_steps = 0
        if student is not None:
            parameters = list(student.parameters())
            if settings.feature_weight > 0:
                self.projection = self._make_projection()
                if self.projection is not None:
                    parameters += list(self.projection.parameters())
            if distributed.active():
                device_ids = [teacher.device.index] if teacher.device.type == "cuda" else None
                self.ddp_student = nn.parallel.DistributedDataParallel(student, device_ids=device_ids)
            self.optimizer = make_optimizer(parameters, settings)
            if settings.ema > 0:
                self.ema = torch.optim.swa_utils.AveragedModel(
                    student, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(settings.ema), use_buffers=True
                )

    def _make_projection(self) -> FeatureProjection | None:
        from pipeline.errors import PipelineError

        if not all(
            hasattr(m, name) for m in (self.student, self.teacher.model) for name in ("forward_features", "head")
        ):
            raise PipelineError("--feature-weight needs registry models on both sides (forward_features/head)")
        if distributed.active():
            raise PipelineError("--feature-weight is not supported under torchrun yet; use KD only")
        probe = torch.zeros(2, *self.teacher.input_shape, device=self.teacher.device)
        with torch.no_grad():
            was = self.student.training
            self.student.eval()
            s, t = self.student.forward_features(probe), self.teacher.model.forward_features(probe)
            self.student.train(was)
        return FeatureProjection(s.shape[1], t.shape[1]).to(self.teacher.device)

    def states(self) -> dict:
        """Everything the resume checkpoint must hold."""
        states = {"pool": self.pool, "rng": GeneratorState(self.rng)}
        if self.synthesizer is not None:
            states["synthesizer"] = self.synthesizer
        if self.mix is not None:
            states["mix"] = self.mix
        if self.student is not None:
            states.update(student=self.student, optimizer=self.optimizer)
            if self.projection is not None:
                states["projection"] = self.projection
            if self.ema is not None:
                states["ema"] = self.ema
        return states

    def add_images(self, images: torch.Tensor, real: bool = False) -> None:
        pixels = self.teacher.to_uint8(images)
        with torch.no_grad():
            logits = self.teacher.model(self.teacher.from_uint8(pixels))
        self.pool.add(pixels, logits, real=real, rng=self.rng)

    def iteration(self, fraction_done: float) -> None:
        scale = cosine_scale(fraction_done)
        if self.synthesizer is not None:
            critic = self.student if (self.student is not None and self.synthesizer.uses_student) else None
            images = self.synthesizer.step(critic, lr_scale=scale)
            if images is not None:
                self.add_images(images)
        if self.mix is not None and self.iterations % self.mix_every == 0:
            self.add_images(self.mix.step(), real=True)
        self.iterations += 1
        if self.student is None or len(self.pool) == 0 or len(self.pool) < self.settings.warmup_images:
            return
        for group in self.optimizer.param_groups:
            group["lr"] = self.settings.lr * scale
        for _ in range(self.settings.kd_steps):
            self.student_step()

    def student_step(self) -> None:
        pixels, teacher_logits = self.pool.batch(self.settings.batch_size, self.rng, self.settings.class_balance)
        images = self.teacher.from_uint8(pixels)
        teacher_logits = teacher_logits.to(self.teacher.device)
        if self.settings.augment:
            images = augment_batch(images, self.rng).to(self.teacher.device)
            with torch.no_grad():
                teacher_logits = self.teacher.model(images)
        self.student.train()
        if self.projection is not None:
            with torch.no_grad():
                teacher_features = self.teacher.model.forward_features(images)
            student_features = self.student.forward_features(images)
            logits = self.student.head(student_features)
            feature = self.projection(student_features, teacher_features)
        else:
            logits = self.ddp_student(images)
            feature = torch.zeros((), device=images.device)
        kd = kd_loss(logits, teacher_logits, self.settings.temperature)
        loss = kd + self.settings.feature_weight * feature
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update_parameters(self.student)
        self.last = {"kd": float(kd.detach()), "feature": float(feature.detach())}
        self.student_steps += 1
        if self.first_kd is None:
            self.first_kd = self.last["kd"]

    def final_student(self) -> nn.Module:
        """The model handed on: the EMA weights when EMA is on, else the last weights (never a best checkpoint)."""
        if self.ema is not None:
            model = copy.deepcopy(self.ema.module)
            return model.eval()
        return self.student.eval()

    def run(self, loop: ResumableLoop, label: str, on_tick=None) -> dict:
        """Iterate until the budget is spent; returns cost figures (time per iteration, peak memory)."""
        import time

        start_step, start = loop.step, time.monotonic()
        with progress_bar(label, loop.steps) as bar:
            bar.advance(loop.step, fraction=loop.fraction_done)
            while loop.running():
                self.iteration(loop.fraction_done)
                loop.end_step()
                bar.advance(fraction=loop.fraction_done, kd_loss=self.last.get("kd"))
                if on_tick is not None:
                    on_tick(loop)
        return cost_report(loop.step - start_step, time.monotonic() - start, self.teacher.device)


def cost_report(steps: int, seconds: float, device: torch.device) -> dict:
    """Per-iteration wall time and peak memory: what a user needs to size a run on a bigger teacher."""
    report = {
        "iterations": steps,
        "seconds_per_iteration": round(seconds / steps, 4) if steps else None,
        "peak_host_memory_mb": peak_rss_mb(),
    }
    if device.type == "cuda":
        report["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        report["gpu"] = torch.cuda.get_device_name(device)
    return report
