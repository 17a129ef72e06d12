"""How many KD steps a data-free student needs before it is worth having (issue 22 item 4): the planner's
MIN_KD_STEPS, derived here from the embedded pairs' accuracy-versus-steps curves.

Each embedded pair is distilled at the quick budget with its curve drawn on the validation split (the last
10,000 training images; the test split is never read). A pair's figure is the student steps (distill steps x
KD steps per distill step) at which its curve first reaches USEFUL (95 %) of the accuracy it ends the budget with
(the curve has a point a minute: a pair already there at its first point gives an upper bound). The planner's
N is the largest over the pairs with residual students: only a teacher with residual blocks can be compressed
instead, and its default student is a residual net (the LeNet pair is reported beside them). These are 28-px
pairs of about 0.2-0.3 M parameters: a 224-px, 1000-class student needs more, so N is a floor for the decision
"distil or compress the teacher", not a promise.

    python benchmarks/kd_steps_needed.py           # -> benchmarks/results/kd_steps_needed.{json,md}
    python benchmarks/kd_steps_needed.py --reuse COMMIT   # the same from the runs already made at COMMIT
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from datafree import machine  # noqa: E402

from pipeline.fileio import atomic_write_json, atomic_write_text  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "runs" / "bench-kd-steps"
PAIRS = ("resnet20-fmnist", "lenet5-fmnist")  # the embedded teachers, each with its default student
# of the accuracy the quick budget ends with: the project's bar for a quick build is 95 % of its KD-real
# ceiling (issue 22), and on the validation split the budget's own end stands in for that ceiling
USEFUL = 0.95


def steps_to_useful(curve: list[dict], kd_steps: int) -> tuple[int | None, float]:
    """Student steps at the first curve point at or above USEFUL x the last point's accuracy, and that target."""
    final = curve[-1]["accuracy"]
    target = USEFUL * final
    first = next((point for point in curve if point["accuracy"] >= target), None)
    return (first["step"] * kd_steps if first else None), target


def main() -> None:
    from pipeline.drop.blocks import droppable_blocks
    from pipeline.models import create_model
    from pipeline.recipes.build import run_build
    from pipeline.recipes.options import BuildOptions

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    made_at = sys.argv[sys.argv.index("--reuse") + 1] if "--reuse" in sys.argv else commit.stdout.strip()
    rows = []
    for teacher in PAIRS:
        out = WORK / teacher
        if "--reuse" not in sys.argv:
            shutil.rmtree(out, ignore_errors=True)
            run_build(
                BuildOptions(
                    teacher=f"embedded:{teacher}", out=out, budget="quick", eval="fmnist-val", command="kd_steps_needed"
                ),
                until="distill",
            )
        manifest = json.loads((out / "manifest.json").read_text())
        distill = manifest["stages"]["distill"]
        kd_steps = distill["config"]["training"]["kd_steps"]
        curve = distill["metrics"]["accuracy_curve"]
        needed, target = steps_to_useful(curve, kd_steps)
        student = distill["config"]["student"]
        rows.append(
            {
                "teacher": teacher,
                "student": student,
                "residual_student": bool(droppable_blocks(create_model(student))),
                "first_point_kd_steps": curve[0]["step"] * kd_steps,  # the curve's resolution
                "kd_steps_per_step": kd_steps,
                "final_val_accuracy": curve[-1]["accuracy"],
                "useful_accuracy": round(target, 4),
                "kd_steps_to_useful": needed,
                "kd_steps_in_budget": curve[-1]["step"] * kd_steps,
                "curve": curve,
                "split": "validation (last 10,000 training images)",
                "commit": commit.stdout.strip(),
                "runs_made_at": made_at,  # the distill runs (the same distill code; --reuse re-reads them)
                "cpu": machine()["cpu"],
            }
        )
    needed = [r["kd_steps_to_useful"] for r in rows if r["kd_steps_to_useful"] is not None and r["residual_student"]]
    result = {"rows": rows, "min_kd_steps": max(needed) if needed else None, "useful": USEFUL}
    atomic_write_json(RESULTS / "kd_steps_needed.json", result)
    lines = [
        "# KD steps a data-free student needs (issue 22 item 4)",
        "",
        f"`python benchmarks/kd_steps_needed.py` at commit {rows[0]['commit']} on {rows[0]['cpu']} (2 cores). "
        f"Quick budget, curves on the validation split. A pair's figure: the student steps at which its curve "
        f"first reaches {USEFUL:.0%} of the accuracy it ends the budget with (a point a minute; reached at the "
        "first point: an upper bound). The planner's MIN_KD_STEPS is the largest over the pairs with residual "
        "students, the only kind a build may compress its teacher instead of distilling "
        f"(pipeline/recipes/deliver.py). Distill runs made at commit {rows[0]['runs_made_at']}.",
        "",
        "| teacher | student | residual | final val accuracy | useful at | KD steps to useful | first curve point "
        "| KD steps in the budget |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['teacher']} | {r['student']} | {'yes' if r['residual_student'] else 'no'} | "
        f"{r['final_val_accuracy']:.4f} | {r['useful_accuracy']:.4f} | {r['kd_steps_to_useful']} | "
        f"{r['first_point_kd_steps']} | {r['kd_steps_in_budget']} |"
        for r in rows
    ]
    lines += ["", f"MIN_KD_STEPS = {result['min_kd_steps']}"]
    atomic_write_text(RESULTS / "kd_steps_needed.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
