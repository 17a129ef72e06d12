"""The decision: is the candidate slower than the baseline by more than the allowed regression?

The gate measures baseline (A) and candidate (B) in alternating rounds, so each round gives one paired ratio
B/A that slow drift of the machine (thermal, other tenants) mostly cancels from. The statistic is the
measurement layer's `paired_ratio` (20 % trimmed mean of those ratios with a bootstrap interval), the same the
budget search and the benchmarks use. A regression needs both
- significance: the interval lies entirely above 1 (the slowdown is real, not noise), and
- relevance: the ratio exceeds 1 + max_regression (the slowdown is as large as the policy cares about).
On an A/A comparison the first fails in about 2.5 % of runs (one-sided 97.5 %) and the second almost always,
so false alarms stay rare; a real slowdown well above the threshold passes both.
"""

from dataclasses import asdict, dataclass

import numpy as np

from pipeline.measure.paired import TOO_BUSY_SPREAD, SlowdownQuestion, paired_ratio

PASS, REGRESSION, UNMEASURABLE = 0, 1, 2  # the exit codes
DECIDE_MIN_ROUNDS = 6  # fewer paired rounds than this: could not measure


@dataclass
class Verdict:
    status: int  # PASS / REGRESSION / UNMEASURABLE
    ratio: float  # 20 % trimmed mean of the paired per-round ratios candidate / baseline
    low: float  # bootstrap confidence interval of that trimmed mean
    high: float
    confidence: float
    max_regression: float
    rounds: int
    reason: str

    @property
    def label(self) -> str:
        return {PASS: "pass", REGRESSION: "regression", UNMEASURABLE: "could not measure"}[self.status]

    def to_dict(self) -> dict:
        return {**asdict(self), "label": self.label}


def decide(
    baseline_ms,
    candidate_ms,
    max_regression: float,
    *,
    confidence: float = 0.95,
    min_rounds: int = DECIDE_MIN_ROUNDS,
    max_round_cv: float = TOO_BUSY_SPREAD,
) -> Verdict:
    """Compare per-round medians (paired by round) of baseline and candidate."""
    baseline_ms, candidate_ms = np.asarray(baseline_ms, float), np.asarray(candidate_ms, float)
    rounds = int(min(baseline_ms.size, candidate_ms.size))
    if rounds < min_rounds:
        return Verdict(
            UNMEASURABLE,
            float("nan"),
            float("nan"),
            float("nan"),
            confidence,
            max_regression,
            rounds,
            f"only {rounds} rounds measured; need at least {min_rounds}",
        )
    paired = paired_ratio(candidate_ms, baseline_ms, confidence)
    ratio, low, high, spread = paired.ratio, paired.low, paired.high, paired.spread
    if spread > max_round_cv:
        return Verdict(
            UNMEASURABLE,
            ratio,
            low,
            high,
            confidence,
            max_regression,
            rounds,
            f"the per-round ratios vary by {100 * spread:.0f} % (CV): the machine is too busy to tell",
        )
    limit = 1 + max_regression
    if low > 1 and ratio > limit:
        reason = (
            f"candidate is {100 * (ratio - 1):.1f} % slower (interval {100 * (low - 1):+.1f} … {100 * (high - 1):+.1f} %), "
            f"above the allowed {100 * max_regression:.1f} %"
        )
        return Verdict(REGRESSION, ratio, low, high, confidence, max_regression, rounds, reason)
    if low > 1:
        reason = (
            f"candidate is {100 * (ratio - 1):.1f} % slower (significant, interval {100 * (low - 1):+.1f} … "
            f"{100 * (high - 1):+.1f} %), within the allowed {100 * max_regression:.1f} %"
        )
    else:
        reason = (
            f"no significant slowdown: {100 * (ratio - 1):+.1f} % (interval {100 * (low - 1):+.1f} … "
            f"{100 * (high - 1):+.1f} %), allowed {100 * max_regression:.1f} %"
        )
    return Verdict(PASS, ratio, low, high, confidence, max_regression, rounds, reason)


def gate_question(gate) -> SlowdownQuestion:
    """What the gate's extra rounds wait on: could more rounds still change the verdict? Not once it is a
    regression, nor once the interval lies wholly below the allowed ratio (no regression is possible at this
    confidence). A significant slowdown within the allowance, an interval across the line, or a machine too busy to
    tell: measure on. A question, not a closure, so that a remote target's device script can ask it too."""
    return SlowdownQuestion(
        model="candidate",
        reference="baseline",
        max_ratio=1 + gate.max_regression,
        confidence=gate.confidence,
        min_rounds=DECIDE_MIN_ROUNDS,
        max_spread=TOO_BUSY_SPREAD,
    )
