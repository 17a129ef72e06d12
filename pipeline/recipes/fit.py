"""The whole build inside its budget (issue 22 item 2): when the plan says the stages would take longer than
`--budget` allows, the stages bounded by seconds get a smaller share of them.

Some costs are fixed by what the build must measure or make: the latency tables and the selection's timings,
the exports, bench, the cost probe itself. The rest is elastic: synthesize's and distill's seconds, drop's
(or the search's) recoverability probes and recovery fine-tunes. At 28 px the fixed part is a few seconds and nothing changes; at
224 px on a CPU the table alone takes minutes, so the elastic stages are scaled by one factor until the plan
fits. `--steps` bounds the training by steps, not seconds: nothing is scaled then (the plan may overrun, and
says so). The fitted budget is kept in the manifest's plan, so a resumed run gives its stages the same
seconds (their configs, and so their cache keys, stay the same).
"""

from collections.abc import Callable
from dataclasses import replace

from pipeline.budgets import Budget
from pipeline.progress import duration

MIN_SHARE = 0.05  # the elastic stages keep at least this share of their seconds (each makes a step anyway)
# the plan is fitted to this share of the budget: its stage estimates miss by up to ~5 % at 224 px (the r34 build
# of benchmarks/results/scale.md: drop 605 s planned, 634 s taken), and process start-up is not planned at all
PLAN_TO = 0.95
REFITS = 4  # re-plans of the scaled budget from the same measured costs (nothing is timed again)
REFIT_TOLERANCE = 0.005  # of the planned-to total: close enough to stop refining
SCALED_FIELDS = ("synthesize_seconds", "standalone_synthesize_seconds", "distill_seconds", "drop_seconds")


def fit_to_budget(
    budget: Budget, plan: dict, earlier: dict | None = None, replan: Callable[[Budget], dict] | None = None
) -> dict | None:
    """{"budget": the fitted budget's fields, "factor", "note", "from": the budget as asked} or None when the
    plan fits (or nothing in it is elastic). `earlier`: the manifest's plan of this run folder; a fit it made
    for the same budget and the same measured costs is reused. `replan`: the plan for a scaled budget, from the
    same measured costs; with it the factor is refined until the scaled plan fits, since the plan is not linear
    in the seconds (a probe keeps a pass over its fewest held-back images, a stage makes its first step)."""
    if earlier and (earlier.get("fitted") or {}).get("from") == budget.to_dict():
        # the same costs, or nothing left to run: the finished stages' configs keep the seconds they ran with
        if not plan["stages"] or earlier.get("probe") == plan.get("probe"):
            return earlier["fitted"]
    total = PLAN_TO * budget.total_seconds
    probe_s = (plan.get("unit_costs") or {}).get("probe_s") or 0.0
    planned = plan["planned_s"] + probe_s
    if planned <= total:
        return None
    elastic = _elastic_s(plan)
    if elastic <= 0:
        return None
    fixed = planned - elastic
    factor = max(MIN_SHARE, min(1.0, (total - fixed) / elastic))
    for _ in range(REFITS if replan is not None else 0):
        scaled = replan(_scaled(budget, factor))
        over = scaled["planned_s"] + probe_s - total
        scaled_elastic = _elastic_s(scaled)
        if over <= REFIT_TOLERANCE * total or scaled_elastic <= 0 or factor <= MIN_SHARE:
            break
        # what is still over comes off the elastic part the scaled plan has left, by the same one factor
        factor = max(MIN_SHARE, factor * max(0.0, scaled_elastic - over) / scaled_elastic)
        fixed = scaled["planned_s"] + probe_s - scaled_elastic
    fitted = _scaled(budget, factor)
    unplanned = f" (and {', '.join(plan['unplanned'])}, not estimated)" if plan.get("unplanned") else ""
    short = " (still over: the fixed costs alone exceed it)" if fixed + MIN_SHARE * elastic > total else ""
    note = (
        f"the stages would take ~{duration(planned)} here, over budget {budget.name}'s "
        f"{duration(budget.total_seconds)} (planned to {PLAN_TO:.0%} of it): "
        f"the time-bounded ones (synthesize, distill, the probes and fine-tunes of drop or search) get {factor:.0%} of their "
        f"seconds; the fixed costs (latency tables and timings, exports, bench, the probe) are "
        f"~{duration(fixed)}{unplanned}{short}"
    )
    return {"budget": fitted.to_dict(), "factor": round(factor, 3), "note": note, "from": budget.to_dict()}


def _elastic_s(plan: dict) -> float:
    return sum(stage.get("elastic_s") or 0.0 for stage in plan["stages"])


def _scaled(budget: Budget, factor: float) -> Budget:
    return replace(budget, **{name: round(getattr(budget, name) * factor, 1) for name in SCALED_FIELDS})
