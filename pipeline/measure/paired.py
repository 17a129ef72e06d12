"""The one paired-ratio statistic (20 % trimmed mean of per-round ratios with a seeded bootstrap interval) and the
question the rounds policy's extra rounds wait on. Written once, in `portable/paired.py`, so that the device
script, which makes a remote target's rounds, answers the question with the same code; this is its name in the
measurement layer."""

from pipeline.portable.paired import (
    TOO_BUSY_SPREAD,
    TRIM,
    PairedRatio,
    SlowdownQuestion,
    bootstrap_ci,
    paired_ratio,
    trimmed_mean,
)

__all__ = [
    "TOO_BUSY_SPREAD",
    "TRIM",
    "PairedRatio",
    "SlowdownQuestion",
    "bootstrap_ci",
    "paired_ratio",
    "trimmed_mean",
]
