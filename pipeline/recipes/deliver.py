"""A plan that can deliver (issue 22 item 4): when the budget buys a data-free student too few KD steps to be
worth having, `build` compresses the teacher itself instead.

Distilling a ResNet-18 from scratch at 224 px on two CPU cores gets a few hundred student steps in the quick
budget; the embedded 28-px residual pair needs MIN_KD_STEPS before its student is useful (95 % of what it
reaches in the budget; benchmarks/kd_steps_needed.py measures it on the validation split). Below that, the plan
switches to PRACTISE block dropping on the teacher with adapter recovery, then the target's precision: a
model that keeps most of the teacher's accuracy by construction. The decision is made once, from the costs
measured before any stage runs, and said in one sentence with what a larger budget, `--device cuda` or
`torchrun` would buy. A user who names `--student` or bounds the run by `--steps` gets what they asked for.
"""

import math

from pipeline.budgets import BUDGETS
from pipeline.progress import duration
from pipeline.recipes.plan import COMPRESS_TEACHER, RECIPES, Recipe

# student steps (distill steps x KD steps each) the embedded residual pair needs to reach 95 % of what the quick
# budget gives it, on the validation split: benchmarks/results/kd_steps_needed.json (a test keeps them equal)
MIN_KD_STEPS = 704
SWITCHABLE = ("build", "build, budget search over teacher and student")


def may_compress_instead(ctx) -> bool:
    """Whether this build is one the planner may turn into a compression of its teacher."""
    from pipeline import distributed
    from pipeline.drop.blocks import droppable_blocks

    options = ctx.options
    if not ctx.budget.plans_for_quality:
        return False  # smoke: the command's own recipe, every code path of it
    if distributed.world_size() > 1:
        return False  # torchrun: every rank distils together, and asked to
    if ctx.recipe.name not in SWITCHABLE or options.until != "bench":
        return False  # `pipeline synthesize` / `pipeline distill`, or a recipe the user chose by its flags
    if options.student is not None or options.steps is not None:
        return False  # the user named the student, or bounds the run by steps: their choice stands
    return bool(droppable_blocks(ctx.teacher.model))


def compress_instead(ctx, plan: dict) -> tuple[Recipe, str] | None:
    """The recipe to follow instead, and the sentence that says why; None when distilling can deliver."""
    distill = next((stage for stage in plan["stages"] if stage["name"] == "distill"), None)
    if distill is None or not may_compress_instead(ctx):
        return None
    student_steps = distill.get("student_steps")
    if student_steps is None or student_steps >= MIN_KD_STEPS:
        return None
    kd_steps = student_steps // distill["steps"] if distill["steps"] else 1
    distill_s = math.ceil(MIN_KD_STEPS / kd_steps) * distill["unit_s"]
    quick = BUDGETS["quick"]
    budget_s = distill_s * (quick.synthesize_seconds + quick.distill_seconds) / quick.distill_seconds
    recipe = RECIPES[COMPRESS_TEACHER]
    reason = (
        f"a data-free {ctx.student} would get ~{student_steps} KD steps in budget {ctx.budget.name} on this "
        f"machine, and the embedded residual pair needs {MIN_KD_STEPS} to be useful (benchmarks/results/kd_steps_needed.md); "
        f"so this build compresses the teacher instead (PRACTISE block dropping with adapter recovery, then the "
        f"target's precision). Distilling a student needs ~{duration(distill_s)} of distillation here "
        f"(--budget {_as_budget(budget_s)}; --device cuda or torchrun make its steps cheaper; --student "
        f"{ctx.student} distils anyway)"
    )
    return recipe, reason


def _as_budget(seconds: float) -> str:
    """A `--budget` duration a user can type: hours with one decimal, or whole minutes below an hour."""
    return f"{seconds / 3600:.1f}h" if seconds >= 3600 else f"{math.ceil(seconds / 60)}m"
