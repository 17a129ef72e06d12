"""Knowledge distillation, the training technique the data-free loop (`synthesize`/`distill`), drop's recovery
fine-tune and binary-weight quantisation share: logit KD and feature projection (`losses`), pre-pooling feature
taps (`features`), shifted/flipped/mixed-up views (`views`), and the feature-KD loop on a fixed image set
(`feature_kd`). A technique package: it imports no stage."""

from pipeline.kd.feature_kd import FeatureKDSettings, feature_kd
from pipeline.kd.features import FeatureTap
from pipeline.kd.losses import FeatureProjection, kd_loss
from pipeline.kd.views import augment_batch, random_shift, random_shift_flip

__all__ = [
    "FeatureKDSettings",
    "FeatureProjection",
    "FeatureTap",
    "augment_batch",
    "feature_kd",
    "kd_loss",
    "random_shift",
    "random_shift_flip",
]
