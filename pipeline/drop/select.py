"""Greedy block selection: drop the block with the lowest score = recoverability / measured latency saving,
recompute every remaining candidate's recoverability given what is already gone, repeat until the
latency budget is met. Savings come from the single-block table (measured once); since savings of
several blocks need not add up exactly, the chosen set is then timed for real against the full model
and the greedy search goes on if the measured latency misses the budget."""

from dataclasses import dataclass
from typing import Callable

from pipeline.errors import PipelineError
from pipeline.progress import log


@dataclass(frozen=True)
class LatencyBudget:
    reduction: float | None = None  # e.g. 0.3: at least 30 % below the full model
    ms: float | None = None  # absolute latency to reach

    def __post_init__(self):
        if (self.reduction is None) == (self.ms is None):
            raise PipelineError("give exactly one latency budget: --latency-reduction or --latency-ms")
        if self.reduction is not None and not 0 < self.reduction < 1:
            raise PipelineError(f"--latency-reduction must be between 0 and 1 (a fraction), got {self.reduction}")
        if self.ms is not None and self.ms <= 0:
            raise PipelineError(f"--latency-ms must be positive, got {self.ms}")

    def limit_ms(self, full_ms: float) -> float:
        return full_ms * (1 - self.reduction) if self.reduction is not None else self.ms

    def describe(self) -> str:
        return f"{100 * self.reduction:.1f} % lower latency" if self.reduction is not None else f"{self.ms} ms"


def greedy_drop(table: dict, budget: LatencyBudget, recoverability: Callable[[list[str]], float],
                measure: Callable[[list[str]], tuple[float, float]], max_verifications: int = 4) -> dict:
    """Returns {"dropped", "steps" (every candidate's score at each step), "verifications"}.

    `recoverability(dropped)` -> R of the model without `dropped`; `measure(dropped)` -> (full ms, without ms)
    timed together, interleaved."""
    savings = {row["block"]: row["saving_ms"] for row in table["blocks"]}
    candidates = [name for name, saving in savings.items() if saving > 0]
    dropped: list[str] = []
    steps, verifications = [], []
    estimate = table["full_ms"]
    limit = budget.limit_ms(table["full_ms"])
    while True:
        while estimate > limit:
            remaining = [name for name in candidates if name not in dropped]
            if not remaining:
                raise PipelineError(f"cannot reach {budget.describe()} by dropping blocks: with every block whose "
                                    f"removal saves time gone, the estimate is {estimate:.3f} ms (limit {limit:.3f} ms)")
            scored = []
            for name in remaining:
                r = recoverability(dropped + [name])
                scored.append({"block": name, "recoverability": r, "saving_ms": savings[name],
                               "score": r / savings[name]})
            best = min(scored, key=lambda row: row["score"])
            dropped.append(best["block"])
            estimate -= best["saving_ms"]
            steps.append({"dropped": best["block"], "estimated_ms": estimate, "candidates": scored})
            log(f"drop: step {len(steps)}: {best['block']} (R {best['recoverability']:.4g}, saves "
                f"{best['saving_ms']:.4f} ms, score {best['score']:.4g}); estimate {estimate:.3f} ms, limit {limit:.3f}")
        full_ms, dropped_ms = measure(dropped)
        measured_limit = budget.limit_ms(full_ms)
        verifications.append({"dropped": list(dropped), "full_ms": full_ms, "dropped_ms": dropped_ms,
                              "limit_ms": measured_limit, "estimated_ms": estimate,
                              "measured_reduction": 1 - dropped_ms / full_ms})
        log(f"drop: measured {dropped_ms:.3f} ms vs full {full_ms:.3f} ms ({100 * (1 - dropped_ms / full_ms):.1f} % lower; "
            f"limit {measured_limit:.3f} ms)")
        if dropped_ms <= measured_limit:
            return {"dropped": dropped, "steps": steps, "verifications": verifications}
        if len(verifications) >= max_verifications:
            raise PipelineError(f"the measured latency missed {budget.describe()} after {len(verifications)} "
                                "verifications; the machine may be too noisy (see the latency table's CV)")
        # the measured model is slower than estimated: scale the estimate to the measurement and go on
        estimate = dropped_ms * table["full_ms"] / full_ms
        limit = budget.limit_ms(table["full_ms"]) if budget.reduction is not None else measured_limit * table["full_ms"] / full_ms
