"""How close the plan a build prints before its first stage comes to what the stages then take (issue 22
item 1). Each case is a real run (`run_build`, as the CLI calls it) in a fresh folder; every planned stage's
planned and actual seconds go into one row, with the issue's tolerance: within 25 % or 20 s, whichever is larger.

    python benchmarks/plan_accuracy.py     # -> benchmarks/results/plan_accuracy.{json,md}
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
WORK = ROOT / "runs" / "bench-plan"
CASES = {  # name -> the options of a `pipeline` command (BuildOptions fields) and the stage it runs until
    "build resnet20 --budget 3m": ({"budget": "3m", "eval": "none"}, "bench"),
    "drop resnet20 --budget smoke --latency-reduction 0.3": (
        {"budget": "smoke", "recipe": "drop", "latency_reduction": 0.3, "eval": "none"},
        "bench",
    ),
}


def within(planned: float, actual: float) -> bool:
    return abs(actual - planned) <= max(0.25 * planned, 20.0)


def main() -> None:
    from pipeline.recipes.build import run_build
    from pipeline.recipes.options import BuildOptions

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    rows = []
    for name, (options, until) in CASES.items():
        out = WORK / name.split()[0]
        shutil.rmtree(out, ignore_errors=True)
        run_build(BuildOptions(out=out, command=f"pipeline {name}", **options), until=until)
        manifest = json.loads((out / "manifest.json").read_text())
        actual = {stage["name"]: stage for stage in manifest["actual"]["stages"]}
        for stage in manifest["plan"]["stages"]:
            wall = actual[stage["name"]]["wall_s"]
            rows.append(
                {
                    "case": name,
                    "stage": stage["name"],
                    "planned_s": stage["planned_s"],
                    "wall_s": wall,
                    "planned_steps": stage.get("steps"),
                    "steps": actual[stage["name"]]["steps"],
                    "within_tolerance": None if stage["planned_s"] is None else within(stage["planned_s"], wall),
                    "commit": commit.stdout.strip(),
                    "cpu": machine()["cpu"],
                }
            )
    atomic_write_json(RESULTS / "plan_accuracy.json", {"rows": rows, "machine": machine()})
    lines = [
        "# Planned vs actual stage times (issue 22 item 1)",
        "",
        f"`python benchmarks/plan_accuracy.py` at commit {rows[0]['commit']} on {rows[0]['cpu']} (2 cores). "
        "Tolerance: within 25 % or 20 s, whichever is larger. Each case is one run.",
        "",
        "| case | stage | planned s | actual s | planned steps | steps | within |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        planned = "not estimated" if row["planned_s"] is None else f"{row['planned_s']:.1f}"
        verdict = {None: "—", True: "yes", False: "NO"}[row["within_tolerance"]]
        lines.append(
            f"| {row['case']} | {row['stage']} | {planned} | {row['wall_s']:.1f} | {row['planned_steps']} | "
            f"{row['steps']} | {verdict} |"
        )
    atomic_write_text(RESULTS / "plan_accuracy.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
