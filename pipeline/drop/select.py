"""Greedy block selection: drop the block with the lowest score = recoverability / latency saving, then
recompute every remaining candidate's score given what is already gone, until the latency budget is met.

Both terms are recomputed at every step, in context: recoverability with the earlier drops in place, and
the saving as *measured* latency(current model) - latency(current model without the candidate), all
candidate models timed together in one interleaved run. Single-block savings need not add up (in a
scratch check on the embedded ResNet-20, three blocks together saved clearly less than the sum of their
table entries), so the first step uses the block latency table and every later step measures. The chosen set is
timed once more against the full model before it is accepted."""

import math
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


# measure(dropped, candidates) -> {"full": ms, "current": ms of the model without `dropped`,
#                                  candidate: ms of the model without `dropped` + [candidate]}, timed together
SetTimer = Callable[[list[str], list[str]], dict[str, float]]


def _from_table(table: dict, dropped: tuple[str, ...] = ()) -> dict[str, float]:
    """The table's view of the model without `dropped` and of each further candidate (savings taken as
    additive: the drop stage checks that after the selection)."""
    saving = {row["block"]: row["saving_ms"] for row in table["blocks"]}
    current = table["full_ms"] - sum(saving[name] for name in dropped)
    timed = {"full": table["full_ms"], "current": current}
    timed.update({name: current - value for name, value in saving.items() if name not in dropped})
    return timed


class TimingShare:
    """A SetTimer with a time share for the later steps' candidate timings: at 224 px one step's session times
    a dozen 20-60 ms models for tens of seconds. A step is measured while its cost, judged by the last one,
    fits in what is left of `seconds`; after that the table's savings stand in (the result says so under
    "source"). `first_s`: the first timed step's cost before any is measured (an estimate from the table's full-model
    latency): a first step that would not fit is not measured either. The check that accepts a plan (no
    candidates) is always measured."""

    def __init__(self, table: dict, timer: SetTimer, seconds: float | None, first_s: float = 0.0):
        self.table, self.timer, self.seconds = table, timer, seconds
        self.spent, self.last = 0.0, first_s

    def __call__(self, dropped: list[str], candidates: list[str]) -> dict:
        import time

        if candidates and self.seconds is not None and self.spent + self.last > self.seconds:
            return {**_from_table(self.table, tuple(dropped)), "source": "table"}
        start = time.monotonic()
        timed = self.timer(dropped, candidates)
        if candidates:
            self.last = time.monotonic() - start
            self.spent += self.last
        return timed


def expected_probes(table: dict, budget: LatencyBudget) -> int:
    """About how many recoverability probes the greedy selection will make: one per remaining block at each
    step, for as many steps as blocks of the table's mean saving need to meet the budget (the selection picks
    by recoverability per saving, not the largest savings first; this sizes the probes, it decides nothing)."""
    savings = [max(0.0, row["saving_ms"]) for row in table["blocks"]]
    needed = table["full_ms"] - budget.limit_ms(table["full_ms"])
    mean = sum(savings) / len(savings) if savings else 0.0
    count = min(len(savings), math.ceil(needed / mean)) if mean > 0 else len(savings)
    return sum(len(savings) - step for step in range(max(1, count)))


def greedy_drop(
    table: dict,
    budget: LatencyBudget,
    recoverability: Callable[[list[str]], float],
    measure: SetTimer,
    max_verifications: int = 3,
) -> dict:
    """Returns {"dropped", "steps" (every candidate's recoverability, measured saving and score at each
    step), "verifications"}."""
    blocks = [row["block"] for row in table["blocks"]]
    dropped: list[str] = []
    steps, verifications = [], []
    if table["full_ms"] <= budget.limit_ms(table["full_ms"]):
        check = measure([], [])
        if check["full"] <= budget.limit_ms(check["full"]):
            log(f"drop: the full model ({check['full']:.3f} ms) already meets {budget.describe()}; nothing to drop")
            return {
                "dropped": [],
                "steps": [],
                "verifications": [
                    {
                        "dropped": [],
                        "full_ms": check["full"],
                        "dropped_ms": check["full"],
                        "limit_ms": budget.limit_ms(check["full"]),
                        "measured_reduction": 0.0,
                    }
                ],
            }
    while True:
        remaining = [name for name in blocks if name not in dropped]
        if not remaining:
            raise PipelineError(
                f"cannot reach {budget.describe()} by dropping blocks: even without every droppable "
                "block the measured latency is above the budget"
            )
        timed = _from_table(table) if not dropped else measure(dropped, remaining)
        source = "table" if not dropped else timed.pop("source", "measured")
        limit = budget.limit_ms(timed["full"])
        scored = []
        for name in remaining:
            saving = timed["current"] - timed[name]
            row = {"block": name, "saving_ms": saving, "latency_ms": timed[name]}
            if saving > 0:  # a block whose removal saves nothing measurable is never worth its accuracy
                row["recoverability"] = recoverability(dropped + [name])
                row["score"] = row["recoverability"] / saving
            scored.append(row)
        candidates = [row for row in scored if "score" in row]
        if not candidates:
            raise PipelineError(
                f"cannot reach {budget.describe()} by dropping blocks: no remaining block saves "
                f"measurable time (now {timed['current']:.3f} ms, limit {limit:.3f} ms)"
            )
        best = min(candidates, key=lambda row: row["score"])
        dropped.append(best["block"])
        steps.append(
            {
                "dropped": best["block"],
                "latency_ms": best["latency_ms"],
                "full_ms": timed["full"],
                "limit_ms": limit,
                "saving_source": source,
                "candidates": scored,
            }
        )
        log(
            f"drop: step {len(steps)}: {best['block']} (R {best['recoverability']:.4g}, saves {best['saving_ms']:.4f} ms, "
            f"score {best['score']:.4g}); {best['latency_ms']:.3f} ms, limit {limit:.3f} ms"
        )
        if best["latency_ms"] > limit:
            continue
        check = measure(dropped, [])
        verifications.append(
            {
                "dropped": list(dropped),
                "full_ms": check["full"],
                "dropped_ms": check["current"],
                "limit_ms": budget.limit_ms(check["full"]),
                "measured_reduction": 1 - check["current"] / check["full"],
            }
        )
        log(
            f"drop: check: {check['current']:.3f} ms vs full {check['full']:.3f} ms "
            f"({100 * verifications[-1]['measured_reduction']:.1f} % lower; limit {verifications[-1]['limit_ms']:.3f} ms)"
        )
        if check["current"] <= verifications[-1]["limit_ms"]:
            return {"dropped": dropped, "steps": steps, "verifications": verifications}
        if len(verifications) >= max_verifications:
            raise PipelineError(
                f"the measured latency missed {budget.describe()} in {len(verifications)} checks; "
                "the machine may be too noisy (see the latency table's CV)"
            )
