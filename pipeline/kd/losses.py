"""The distillation losses every student-training loop shares: logit KD (Hinton et al. 2015) and a
FitNets-style projection for matching pre-pooling features across channel counts."""

import torch
import torch.nn as nn
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) * T^2 (Hinton et al. 2015)."""
    t = temperature
    return (
        F.kl_div(F.log_softmax(student_logits / t, 1), F.softmax(teacher_logits / t, 1), reduction="batchmean") * t * t
    )


class FeatureProjection(nn.Module):
    """FitNets-style 1x1 projection of student features onto the teacher's channel count (trained with the student)."""

    def __init__(self, student_channels: int, teacher_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(student_channels, teacher_channels, 1, bias=False)

    def forward(self, student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        projected = self.conv(student_features)
        if projected.shape[-2:] != teacher_features.shape[-2:]:
            projected = F.adaptive_avg_pool2d(projected, teacher_features.shape[-2:])
        return F.mse_loss(projected, teacher_features)
