"""DAFL (Chen et al. 2019): a generator trained so the frozen teacher is confident (one-hot loss), strongly
activated (activation loss) and class-balanced (information entropy): L_G = L_oh + a*L_a + b*L_ie.

Presets: `paper` is the authors' MNIST setting (generator width 128, Adam lr_G 0.2, batch 512, no extra
terms). `fast` (default) is ours: a narrower generator, lr 1e-3, plus DeepInversion's BN-statistics term,
which makes the generator useful within minutes on a CPU for teachers with BatchNorm.
"""

import torch
import torch.nn as nn

from pipeline.models.teacher_view import TeacherView
from pipeline.synthesize.base import Synthesizer, register_synthesizer
from pipeline.synthesize.generator import Generator
from pipeline.synthesize.losses import (
    BatchNormStatistics,
    FeatureTap,
    activation_loss,
    disagreement_loss,
    information_entropy_loss,
    one_hot_loss,
    student_as_critic,
)


@register_synthesizer("dafl", "DAFL generator: one-hot + activation + entropy losses (presets: fast, paper)")
class DaflSynthesizer(Synthesizer):
    uses_student = True  # only when `adversarial` > 0
    defaults = {
        "batch_size": 128,
        "latent_dim": 100,
        "width": 64,
        "lr": 1e-3,
        "alpha_activation": 0.1,
        "beta_entropy": 5.0,
        "gamma_bn": 1.0,
        "adversarial": 0.0,
    }
    presets = {"fast": {}, "paper": {"batch_size": 512, "width": 128, "lr": 0.2, "gamma_bn": 0.0}}

    def __init__(self, teacher: TeacherView, options: dict, seed: int):
        super().__init__(teacher, options, seed)
        torch.manual_seed(seed)  # generator initialisation
        channels, size, _ = teacher.input_shape
        self.generator = Generator(size, channels, options["latent_dim"], options["width"]).to(teacher.device)
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=options["lr"], betas=(0.5, 0.999))
        self.features = FeatureTap(teacher.model)
        self.bn_stats = BatchNormStatistics(teacher.model) if options["gamma_bn"] > 0 else None
        self.uses_student = options["adversarial"] > 0
        self.last_terms: dict[str, float] = {}

    def step(self, student: nn.Module | None = None, lr_scale: float = 1.0) -> torch.Tensor:
        o = self.options
        self.optimizer.param_groups[0]["lr"] = o["lr"] * lr_scale
        self.generator.train()
        images = self.generator(self.randn(o["batch_size"], o["latent_dim"]))
        if self.bn_stats is not None:
            with self.bn_stats.recording():
                logits = self.teacher.model(images)
        else:
            logits = self.teacher.model(images)
        terms = {"one_hot": one_hot_loss(logits), "entropy": information_entropy_loss(logits)}
        loss = terms["one_hot"] + o["beta_entropy"] * terms["entropy"]
        if self.features.available and self.features.features is not None:
            terms["activation"] = activation_loss(self.features.features)
            loss = loss + o["alpha_activation"] * terms["activation"]
        if self.bn_stats is not None:
            terms["bn"] = self.bn_stats.pop_loss()
            loss = loss + o["gamma_bn"] * terms["bn"]
        if self.uses_student and student is not None:
            with student_as_critic(student):
                terms["adversarial"] = disagreement_loss(student(images), logits)
            loss = loss + o["adversarial"] * terms["adversarial"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.last_terms = {name: float(value.detach()) for name, value in terms.items()}
        return images.detach()

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "generator": self.generator.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.generator.load_state_dict(state["generator"])
        self.optimizer.load_state_dict(state["optimizer"])

    def close(self) -> None:
        self.features.close()
        if self.bn_stats is not None:
            self.bn_stats.close()
