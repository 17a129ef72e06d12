"""Soft-targeted transfer-set synthesis (Zi Wang, AAAI 2021): no generator network.

The teacher's output space is modelled as a multivariate normal: class similarity R is the cosine
similarity of the rows of the final-layer weight matrix, min-max normalised; per class c the logits are
s ~ N(mu_c, sigma * R) with mu_c a one-hot-like vector (`logit_scale` at c); the soft target is
softmax(s / tau). A batch of noise images is optimised so the teacher's softened output matches its
targets (KL), plus an activation term on the first convolution's output; the images then join the set.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.errors import PipelineError
from pipeline.models.teacher_view import TeacherView
from pipeline.synthesize.base import Synthesizer, register_synthesizer
from pipeline.synthesize.losses import OutputTap, first_conv, last_linear


def class_similarity(weight: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of the class vectors (rows of the last Linear weight), min-max normalised to [0, 1]."""
    rows = F.normalize(weight.detach().float(), dim=1)
    similarity = rows @ rows.t()
    return (similarity - similarity.min()) / (similarity.max() - similarity.min()).clamp_min(1e-8)


def nearest_psd(matrix: torch.Tensor, floor: float = 1e-4) -> torch.Tensor:
    """R is symmetric but not always positive definite; clip its eigenvalues so it is a valid covariance."""
    values, vectors = torch.linalg.eigh((matrix + matrix.t()) / 2)
    return vectors @ torch.diag(values.clamp_min(floor)) @ vectors.t()


@register_synthesizer("soft-target", "Wang 2021: noise images optimised to MVN-sampled soft targets (no generator)")
class SoftTargetSynthesizer(Synthesizer):
    defaults = {
        "batch_size": 128,
        "inner_steps": 50,
        "lr": 0.1,
        "sigma": 1.0,
        "tau": 4.0,
        "logit_scale": 8.0,
        "w_activation": 0.05,
    }

    def __init__(self, teacher: TeacherView, options: dict, seed: int):
        super().__init__(teacher, options, seed)
        classifier = last_linear(teacher.model)
        if classifier is None:
            raise PipelineError(
                "soft-target needs the teacher's final Linear layer (a module teacher, not a "
                "TorchScript/exported graph); use --synthesizer dafl"
            )
        covariance = options["sigma"] * nearest_psd(class_similarity(classifier.weight.cpu()))
        self.logit_distribution = torch.distributions.MultivariateNormal(
            torch.zeros(teacher.num_classes), covariance_matrix=covariance
        )
        self.first_conv = OutputTap(first_conv(teacher.model))
        self.batch: dict | None = None
        self.last_terms: dict[str, float] = {}

    def _new_batch(self) -> dict:
        o, (c, h, w) = self.options, self.teacher.input_shape
        classes = self.randint(self.teacher.num_classes, o["batch_size"]).cpu()
        torch_state = torch.get_rng_state()  # MultivariateNormal samples from the global RNG: seed it from ours
        torch.manual_seed(int(torch.randint(2**31, (1,), generator=self.rng)))
        noise = self.logit_distribution.sample((o["batch_size"],))
        torch.set_rng_state(torch_state)
        logits = o["logit_scale"] * F.one_hot(classes, self.teacher.num_classes).float() + noise
        targets = F.softmax(logits / o["tau"], 1).to(self.teacher.device)
        raw = self.randn(o["batch_size"], c, h, w).requires_grad_(True)
        return {"raw": raw, "targets": targets, "optimizer": torch.optim.Adam([raw], lr=o["lr"]), "done": 0}

    def step(self, student: nn.Module | None = None, lr_scale: float = 1.0) -> torch.Tensor | None:
        o = self.options
        if self.batch is None:
            self.batch = self._new_batch()
        batch = self.batch
        images = self.teacher.from_pixels(torch.sigmoid(batch["raw"]))  # valid pixels by construction
        logits = self.teacher.model(images)
        kl = F.kl_div(F.log_softmax(logits / o["tau"], 1), batch["targets"], reduction="batchmean")
        activation = -self.first_conv.output.abs().mean() if self.first_conv.output is not None else torch.zeros(())
        loss = kl + o["w_activation"] * activation
        batch["optimizer"].zero_grad(set_to_none=True)
        loss.backward()
        batch["optimizer"].step()
        self.last_terms = {"kl": float(kl.detach()), "activation": float(activation.detach())}
        batch["done"] += 1
        if batch["done"] < o["inner_steps"]:
            return None
        self.batch = None
        return self.teacher.from_pixels(torch.sigmoid(batch["raw"].detach()))

    def close(self) -> None:
        self.first_conv.close()
