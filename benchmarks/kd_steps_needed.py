"""How many KD steps a data-free student needs before it is worth having (issue 22 item 4): the planner's
MIN_KD_STEPS, derived here from the embedded pairs' accuracy-versus-steps curves.

Each embedded pair is distilled at the quick budget with its curve drawn on the validation split (the last
10,000 training images; the test split is never read). A pair's figure is the student steps (distill steps x
KD steps per distill step) at which its curve first reaches USEFUL of the accuracy it ends the budget with;
the planner's N is the largest over the pairs. These are 28-px pairs of about 0.2-0.3 M parameters: a 224-px,
1000-class student needs more, so N is a floor for the decision "distil or compress the teacher", not a promise.

    python benchmarks/kd_steps_needed.py     # -> benchmarks/results/kd_steps_needed.{json,md}
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
USEFUL = 0.9  # of the accuracy the quick budget ends with


def steps_to_useful(curve: list[dict], kd_steps: int) -> tuple[int | None, float]:
    """Student steps at the first curve point at or above USEFUL x the last point's accuracy, and that target."""
    final = curve[-1]["accuracy"]
    target = USEFUL * final
    first = next((point for point in curve if point["accuracy"] >= target), None)
    return (first["step"] * kd_steps if first else None), target


def main() -> None:
    from pipeline.recipes.build import run_build
    from pipeline.recipes.options import BuildOptions

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    rows = []
    for teacher in PAIRS:
        out = WORK / teacher
        if "--reuse" not in sys.argv:
            shutil.rmtree(out, ignore_errors=True)
            run_build(
                BuildOptions(teacher=f"embedded:{teacher}", out=out, budget="quick", eval="fmnist-val", command="kd_steps_needed"),
                until="distill",
            )
        manifest = json.loads((out / "manifest.json").read_text())
        distill = manifest["stages"]["distill"]
        kd_steps = distill["config"]["training"]["kd_steps"]
        curve = distill["metrics"]["accuracy_curve"]
        needed, target = steps_to_useful(curve, kd_steps)
        rows.append(
            {
                "teacher": teacher,
                "student": distill["config"]["student"],
                "kd_steps_per_step": kd_steps,
                "final_val_accuracy": curve[-1]["accuracy"],
                "useful_accuracy": round(target, 4),
                "kd_steps_to_useful": needed,
                "kd_steps_in_budget": curve[-1]["step"] * kd_steps,
                "curve": curve,
                "split": "validation (last 10,000 training images)",
                "commit": commit.stdout.strip(),
                "cpu": machine()["cpu"],
            }
        )
    needed = [row["kd_steps_to_useful"] for row in rows if row["kd_steps_to_useful"] is not None]
    result = {"rows": rows, "min_kd_steps": max(needed) if needed else None, "useful": USEFUL}
    atomic_write_json(RESULTS / "kd_steps_needed.json", result)
    lines = [
        "# KD steps a data-free student needs (issue 22 item 4)",
        "",
        f"`python benchmarks/kd_steps_needed.py` at commit {rows[0]['commit']} on {rows[0]['cpu']} (2 cores). "
        f"Quick budget, curves on the validation split. A pair's figure: the student steps at which its curve "
        f"first reaches {USEFUL:.0%} of the accuracy it ends the budget with. The planner's MIN_KD_STEPS is the "
        "largest (pipeline/recipes/deliver.py).",
        "",
        "| teacher | student | final val accuracy | useful at | KD steps to useful | KD steps in the budget |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['teacher']} | {r['student']} | {r['final_val_accuracy']:.4f} | {r['useful_accuracy']:.4f} | "
        f"{r['kd_steps_to_useful']} | {r['kd_steps_in_budget']} |"
        for r in rows
    ]
    lines += ["", f"MIN_KD_STEPS = {result['min_kd_steps']}"]
    atomic_write_text(RESULTS / "kd_steps_needed.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
