"""The one paired-ratio statistic: how much slower (or faster) model B is than model A, from interleaved rounds.

Each round times both models back to back, so the per-round ratio B/A cancels slow drift of the machine
(thermal, other tenants). The estimate is the 20 % trimmed mean of those ratios: robust to a few disturbed
rounds like a median, but using more of the data (a median needed ~1.5x the rounds for the same precision,
benchmarks/results/gate.md). A seeded percentile bootstrap over rounds gives its interval. The gate, the budget
search, the drop checks and the benchmarks all use this function (through `pipeline.measure`).

It lives in `portable/` because the rounds policy's extra rounds wait on a question about it (`SlowdownQuestion`,
the gate's "could more rounds still change the verdict?"), and on a remote target those rounds are made by the
device script, which asks the same question with this same code."""

from __future__ import annotations  # Python 3.8 on JetPack 5

from dataclasses import asdict, dataclass

import numpy as np

TRIM = 0.2  # fraction cut from each end before averaging
# per-round ratios scattered more than this (CV) mean the machine was too busy to compare the two models
TOO_BUSY_SPREAD = 0.5


def trimmed_mean(values, axis: int = -1, trim: float = TRIM):
    ordered = np.sort(np.asarray(values, dtype=np.float64), axis=axis)
    cut = int(trim * ordered.shape[axis])
    kept = np.take(ordered, range(cut, ordered.shape[axis] - cut), axis=axis)
    return kept.mean(axis=axis)


def bootstrap_ci(values, confidence: float = 0.95, resamples: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """Trimmed mean of `values` and its percentile-bootstrap interval (seeded, so a decision is reproducible)."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    estimates = trimmed_mean(rng.choice(values, size=(resamples, values.size), replace=True), axis=1)
    tail = (1 - confidence) / 2
    return float(trimmed_mean(values)), float(np.quantile(estimates, tail)), float(np.quantile(estimates, 1 - tail))


@dataclass(frozen=True)
class PairedRatio:
    ratio: float  # 20 % trimmed mean of the per-round ratios B / A
    low: float  # bootstrap interval of that estimate
    high: float
    confidence: float
    rounds: int
    spread: float  # CV of the per-round ratios: large = the machine was too busy to compare

    def to_dict(self) -> dict:
        return asdict(self)


def paired_ratio(model_rounds_ms, reference_rounds_ms, confidence: float = 0.95) -> PairedRatio:
    """B/A from per-round medians paired by round (the first min(len) rounds of each)."""
    model, reference = np.asarray(model_rounds_ms, float), np.asarray(reference_rounds_ms, float)
    rounds = int(min(model.size, reference.size))
    if rounds == 0:
        raise ValueError("no rounds to compare")
    ratios = model[:rounds] / reference[:rounds]
    ratio, low, high = bootstrap_ci(ratios, confidence)
    return PairedRatio(ratio, low, high, confidence, rounds, float(np.std(ratios) / np.mean(ratios)))


@dataclass(frozen=True)
class SlowdownQuestion:
    """Is `model` slower than `reference` by more than `max_ratio` (the gate's 1 + allowed regression)? Answered
    once the figures settle it either way: a significant slowdown above the line (interval above 1, ratio above
    the line), or an interval wholly below the line (no slowdown that large is possible at this confidence).
    Unanswered while the interval crosses the line, a significant slowdown stays within it, there are fewer than
    `min_rounds` rounds, or the rounds scatter too much to compare. Called with name -> round medians so far, it
    is the `enough` of `timing.interleaved_rounds`; `to_dict` is how it travels to a device."""

    model: str
    reference: str
    max_ratio: float
    confidence: float = 0.95
    min_rounds: int = 6
    max_spread: float = TOO_BUSY_SPREAD

    def __call__(self, round_medians: dict) -> bool:
        model, reference = round_medians[self.model], round_medians[self.reference]
        if min(len(model), len(reference)) < self.min_rounds:
            return False
        paired = paired_ratio(model, reference, self.confidence)
        if paired.spread > self.max_spread:
            return False
        return (paired.low > 1 and paired.ratio > self.max_ratio) or paired.high < self.max_ratio

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, fields: dict) -> SlowdownQuestion:
        return cls(**fields)
