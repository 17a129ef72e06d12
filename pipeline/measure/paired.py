"""The one paired-ratio statistic: how much slower (or faster) model B is than model A, from interleaved rounds.

Each round times both models back to back, so the per-round ratio B/A cancels slow drift of the machine
(thermal, other tenants). The estimate is the 20 % trimmed mean of those ratios: robust to a few disturbed
rounds like a median, but using more of the data (a median needed ~1.5x the rounds for the same precision,
benchmarks/results/gate.md). A seeded percentile bootstrap over rounds gives its interval. The gate, the budget
search, the drop checks and the benchmarks all use this function."""

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
