"""BN-statistics inversion (DeepInversion, Yin et al. 2020) for teachers with BatchNorm.

Images are pushed to reproduce, at every BN layer, the batch mean/variance the teacher saw in training,
while the teacher classifies them as randomly drawn target labels (CE), with an image prior (TV).
Two ways to produce them:
- `mode=generator` (default; Fast-Datafree style, Fang et al. 2022): one generator is reused across batches
  and only a few steps are taken per batch, starting from fresh learnable latents — synthesis gets cheap
  because the generator remembers what worked;
- `mode=direct`: each batch of inputs is optimised from noise for `inner_steps` steps (DeepInversion).
The optional adversarial term looks for images on which the student still disagrees with the teacher.
The teacher judges jittered views (shifted by up to `jitter` px, randomly mirrored), as in DeepInversion,
Fast-Datafree and CMI: images must keep their meaning under small changes (LeNet, 5-min runs: +1.4 and +1.9 points over none).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.errors import PipelineError
from pipeline.models.teacher_view import TeacherView
from pipeline.synthesize.base import Synthesizer, register_synthesizer
from pipeline.synthesize.generator import Generator
from pipeline.synthesize.losses import (
    BatchNormStatistics,
    disagreement_loss,
    student_as_critic,
    total_variation,
)


@register_synthesizer(
    "bn-inversion", "BatchNorm-statistics inversion (DeepInversion / Fast-Datafree), generator or direct"
)
class BnInversionSynthesizer(Synthesizer):
    uses_student = True
    defaults = {
        "mode": "generator",
        "conditional": False,
        "batch_size": 128,
        "inner_steps": 1,
        "latent_dim": 256,
        "width": 32,
        "lr": 4e-3,
        "lr_latent": 0.01,
        "lr_direct": 0.1,
        "w_bn": 10.0,
        "w_ce": 0.4,
        # off by default: against a torchvision resnet18 teacher the adversarial term pulls the pool to one class
        # (sneakers: 65 % of a quick build's) and costs a student pass per synthesis step; without it, and with
        # class-balanced KD batches, 5-min builds score +9.5 / +1.3 / -0.2 points on the validation split for the
        # resnet18 / ResNet-20 / LeNet pairs (benchmarks/results/datafree-resnet18-ablation.md)
        "w_adv": 0.0,
        "w_tv": 0.0,
        "jitter": 2,
    }
    presets = {
        "fast": {},
        "deepinversion": {"mode": "direct", "inner_steps": 200, "w_bn": 1.0, "w_ce": 1.0, "w_adv": 0.0, "w_tv": 1e-3},
    }

    def __init__(self, teacher: TeacherView, options: dict, seed: int):
        super().__init__(teacher, options, seed)
        self.bn_stats = BatchNormStatistics(teacher.model)
        if not self.bn_stats.layers:
            raise PipelineError(
                "bn-inversion needs a teacher with BatchNorm layers; use --synthesizer dafl or soft-target"
            )
        if options["mode"] not in ("generator", "direct"):
            raise PipelineError(f"bn-inversion mode must be 'generator' or 'direct', not {options['mode']!r}")
        torch.manual_seed(seed)
        channels, size, _ = teacher.input_shape
        pre = teacher.preprocess
        self.generator = None
        if options["mode"] == "generator":
            self.generator = Generator(
                size, channels, options["latent_dim"], options["width"], output="pixels", mean=pre.mean, std=pre.std
            ).to(teacher.device)
            # conditional: a learned per-class offset of the latent, so the generator can honour the CE target
            self.label_embedding = nn.Embedding(teacher.num_classes, options["latent_dim"]).to(teacher.device)
            nn.init.normal_(self.label_embedding.weight, std=1.0 if options["conditional"] else 0.0)
            self.label_embedding.weight.requires_grad_(bool(options["conditional"]))
            parameters = list(self.generator.parameters()) + (
                [self.label_embedding.weight] if options["conditional"] else []
            )
            self.generator_optimizer = torch.optim.Adam(parameters, lr=options["lr"], betas=(0.5, 0.999))
        self.batch: dict | None = None  # the batch being optimised: latents or pixels, targets, optimiser
        self.last_terms: dict[str, float] = {}

    def _new_batch(self) -> dict:
        o, (c, h, w) = self.options, self.teacher.input_shape
        targets = self.randint(self.teacher.num_classes, o["batch_size"])
        if self.generator is not None:
            latent = self.randn(o["batch_size"], o["latent_dim"]).requires_grad_(True)
            optimizer = torch.optim.Adam([latent], lr=o["lr_latent"], betas=(0.5, 0.999))
            return {"variable": latent, "targets": targets, "optimizer": optimizer, "done": 0}
        # direct: optimise unconstrained pixels through a sigmoid so images stay in the valid range
        raw = self.randn(o["batch_size"], c, h, w).requires_grad_(True)
        return {"variable": raw, "targets": targets, "optimizer": torch.optim.Adam([raw], lr=o["lr_direct"]), "done": 0}

    def _images(self, variable: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.generator is not None:
            return self.generator(variable + self.label_embedding(targets))
        return self.teacher.from_pixels(torch.sigmoid(variable))

    def _jittered(self, images: torch.Tensor) -> torch.Tensor:
        """What the teacher sees (Fast-Datafree / CMI augment synthetic images before the teacher): random
        shifts of up to `jitter` pixels and horizontal flips, so images must work under small changes."""
        if not self.options["jitter"]:
            return images
        from pipeline.kd import random_shift_flip

        return random_shift_flip(images, int(self.options["jitter"]), self.rng)

    def step(self, student: nn.Module | None = None, lr_scale: float = 1.0) -> torch.Tensor | None:
        o = self.options
        if self.batch is None:
            self.batch = self._new_batch()
        batch = self.batch
        if self.generator is not None:
            self.generator.train()
            self.generator_optimizer.param_groups[0]["lr"] = o["lr"] * lr_scale
        images = self._images(batch["variable"], batch["targets"])
        seen = self._jittered(images)
        with self.bn_stats.recording():
            logits = self.teacher.model(seen)
        terms = {"bn": self.bn_stats.pop_loss(), "ce": F.cross_entropy(logits, batch["targets"])}
        loss = o["w_bn"] * terms["bn"] + o["w_ce"] * terms["ce"]
        if o["w_tv"] > 0:
            terms["tv"] = total_variation(images)
            loss = loss + o["w_tv"] * terms["tv"]
        if o["w_adv"] > 0 and student is not None:
            with student_as_critic(student):
                terms["adversarial"] = disagreement_loss(student(seen), logits)
            loss = loss + o["w_adv"] * terms["adversarial"]
        batch["optimizer"].zero_grad(set_to_none=True)
        if self.generator is not None:
            self.generator_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        batch["optimizer"].step()
        if self.generator is not None:
            self.generator_optimizer.step()
        self.last_terms = {name: float(value.detach()) for name, value in terms.items()}
        batch["done"] += 1
        if batch["done"] < o["inner_steps"]:
            return None
        self.batch = None
        with torch.no_grad():  # the batch after its last update (train-mode BN, as it was optimised)
            return self._images(batch["variable"], batch["targets"]).detach()

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.generator is not None:
            state.update(
                generator=self.generator.state_dict(),
                optimizer=self.generator_optimizer.state_dict(),
                label_embedding=self.label_embedding.state_dict(),
            )
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self.generator is not None:
            self.generator.load_state_dict(state["generator"])
            self.label_embedding.load_state_dict(state["label_embedding"])
            self.generator_optimizer.load_state_dict(state["optimizer"])

    def close(self) -> None:
        self.bn_stats.close()
