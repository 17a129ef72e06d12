"""Feature KD: a student imitates its teacher's pre-pooling features (MSE), plus logit KD, on a fixed set of
images (a transfer set, data-free, or a few real images). It is PRACTISE's recovery fine-tune after dropping
blocks (METHODS.md §2), with the authors' settings (SGD, lr 0.02, momentum 0.9, wd 1e-4, batch 64, lr x0.1 at
40 % of the iterations), and the binary-weight quantizer trains its latent weights with it too.
Resumable: the loop state is checkpointed in the caller's work folder."""

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.errors import PipelineError
from pipeline.kd.features import FeatureTap
from pipeline.kd.losses import FeatureProjection, kd_loss
from pipeline.kd.views import augment_batch
from pipeline.progress import progress_bar
from pipeline.stage import optional_field
from pipeline.training import GeneratorState, ResumableLoop


@dataclass(frozen=True)
class FeatureKDSettings:
    iterations: int = 2000
    batch_size: int = 64
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    step_at: float = 0.4  # lr x0.1 from this fraction of the iterations on
    kd_weight: float = 1.0  # logit KD next to the feature MSE; 0 = features only
    temperature: float = 4.0
    augment: bool = True  # shifted/flipped/mixed-up views, labelled by the teacher on the fly
    # Not in the paper, needed here: right after dropping, the gradient is large (features far from the
    # teacher's, BatchNorm in inference mode) and plain SGD at lr 0.02 diverged within two steps.
    warmup_iterations: int = 50  # linear lr warm-up
    clip_grad_norm: float = 2.0
    # a wall-time bound beside the iterations (a 224-px step costs seconds on a CPU): the loop ends at whichever
    # comes first, and the lr schedule follows the larger of the two fractions. None: iterations only
    seconds: float | None = optional_field()

    def to_dict(self) -> dict:
        return asdict(self)


def feature_kd(
    student: nn.Module,
    teacher: nn.Module,
    images: torch.Tensor,
    settings: FeatureKDSettings,
    workdir: Path,
    seed: int = 0,
    label: str = "feature KD",
    *,
    no_weight_decay: tuple[nn.Parameter, ...] = (),
    lr_option: str = "",
) -> dict:
    """Train `student` (in place) to match `teacher` on `images` (normalised, on the training device).
    `no_weight_decay`: parameters that train without weight decay (drop's identity-initialised adapters, which
    it would pull towards zero); `lr_option`: the command-line option a diverging run should be told to lower."""
    rng = torch.Generator().manual_seed(seed)
    # BatchNorm stays in inference mode: its running statistics are the teacher's memory of the real data,
    # which synthetic (or 500 real) images would overwrite with worse estimates; gamma/beta still train.
    student.eval()
    teacher.eval()
    for parameter in student.parameters():
        parameter.requires_grad_(True)
    student_tap, teacher_tap = FeatureTap(student), FeatureTap(teacher)
    projection = _projection_if_needed(student, teacher, images)
    undecayed = {id(p) for p in no_weight_decay}
    groups = [
        {"params": [p for p in student.parameters() if id(p) not in undecayed], "weight_decay": settings.weight_decay},
        {"params": [p for p in student.parameters() if id(p) in undecayed], "weight_decay": 0.0},
    ]
    if projection is not None:
        groups.append({"params": list(projection.parameters()), "weight_decay": 0.0})
    optimizer = torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum)
    states = {"student": student, "optimizer": optimizer, "rng": GeneratorState(rng)}
    if projection is not None:
        states["projection"] = projection
    seconds = settings.seconds if settings.seconds is not None else float("inf")
    loop = ResumableLoop(workdir, seconds, states)

    def fraction_done() -> float:
        return max(loop.step / settings.iterations, loop.elapsed / seconds)

    first = last = None
    try:
        with progress_bar(label, settings.iterations) as bar:
            bar.advance(loop.step, fraction=fraction_done())
            while loop.step < settings.iterations and loop.elapsed < seconds:
                done = fraction_done()
                scale = 0.1 if done >= settings.step_at else 1.0
                # the warm-up: its iterations, or its share of the run when time allows fewer iterations
                warmup_share = settings.warmup_iterations / settings.iterations
                scale *= min(1.0, max((loop.step + 1) / max(1, settings.warmup_iterations), done / warmup_share))
                for group in optimizer.param_groups:
                    group["lr"] = settings.lr * scale
                index = torch.randint(len(images), (settings.batch_size,), generator=rng)
                batch = images[index]
                if settings.augment:
                    batch = augment_batch(batch, rng).to(images.device)
                with torch.no_grad():
                    teacher_features, teacher_logits = teacher_tap(batch)
                features, logits = student_tap(batch)
                feature_loss = (
                    projection(features, teacher_features)
                    if projection is not None
                    else F.mse_loss(features, teacher_features)
                )
                # relative to the teacher features' mean square: the same lr then suits every architecture
                # (the raw MSE of the embedded ResNet-20 is large enough to diverge at lr 0.02)
                feature_loss = feature_loss / teacher_features.pow(2).mean().clamp_min(1e-8)
                loss = feature_loss
                if settings.kd_weight > 0:
                    loss = loss + settings.kd_weight * kd_loss(logits, teacher_logits, settings.temperature)
                if not torch.isfinite(loss):
                    raise PipelineError(
                        f"{label} diverged at iteration {loop.step} (loss {float(loss.detach())}); "
                        f"lower its learning rate{f' ({lr_option})' if lr_option else ''}"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(
                    [p for group in groups for p in group["params"]], settings.clip_grad_norm
                )
                optimizer.step()
                last = float(loss.detach())
                first = last if first is None else first
                loop.end_step()
                bar.advance(loss=last, fraction=fraction_done())
    finally:
        student_tap.close()
        teacher_tap.close()
    loop.finish()
    student.eval()
    return {
        "iterations": loop.step,
        "iterations_configured": settings.iterations,
        "stopped_by": "iterations" if loop.step >= settings.iterations else "seconds",
        "first_loss": first,
        "final_loss": last,
        "resumed": loop.resumed,
        "feature_projection": projection is not None,
    }


def _projection_if_needed(student: nn.Module, teacher: nn.Module, images: torch.Tensor):
    """Channel-pruned students have fewer feature channels than the teacher: match them through a learned 1x1."""
    probe = images[:2]
    with torch.no_grad():
        student_features = FeatureTap(student)
        teacher_features = FeatureTap(teacher)
        try:
            s, t = student_features(probe)[0], teacher_features(probe)[0]
        finally:
            student_features.close()
            teacher_features.close()
    if s.shape == t.shape:
        return None
    return FeatureProjection(s.shape[1], t.shape[1]).to(images.device)
