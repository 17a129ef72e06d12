"""Recovery after dropping blocks (PRACTISE, METHODS.md §2): the model without the blocks, with identity 1x1
adapters at the gaps, learns to imitate the full model by feature KD (`pipeline.kd`); then the adapters are
folded into the neighbouring convolutions and the fold is checked numerically. The drop stage and the budget
search both recover their models with `recover`."""

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from pipeline.drop.adapters import adapter_parameters, fold_adapters_checked
from pipeline.drop.recoverability import adapted_without
from pipeline.kd import FeatureKDSettings, feature_kd


@dataclass(frozen=True)
class Recovered:
    model: nn.Module  # without the blocks, adapters folded away; on the CPU, in eval mode
    finetune: dict | None  # the feature-KD loop's record; None when nothing was dropped (the model is a copy)
    fused_max_abs_diff: float  # folded vs unfolded outputs on the check images


def recover(
    teacher: nn.Module,
    dropped: list[str] | tuple[str, ...],
    images: torch.Tensor,
    settings: FeatureKDSettings,
    workdir: Path,
    *,
    input_shape,
    check_images: torch.Tensor,
    seed: int = 0,
    label: str | None = None,
) -> Recovered:
    """`teacher` without `dropped`, fine-tuned on `images` (normalised, on the training device) to imitate
    `teacher`, which also serves as its feature teacher; resumable from `workdir`. `check_images` test the fold."""
    student = adapted_without(teacher, list(dropped), input_shape)
    finetune = None
    if dropped:  # nothing dropped (the model already met the budget): hand it on untouched
        finetune = feature_kd(
            student,
            teacher,
            images,
            settings,
            workdir,
            seed,
            label=label or f"recovery fine-tune ({len(dropped)} blocks dropped)",
            no_weight_decay=tuple(adapter_parameters(student)),
            lr_option="--drop-lr",
        )
    fused, fused_diff = fold_adapters_checked(student.cpu().eval(), check_images.cpu())
    return Recovered(fused, finetune, fused_diff)
