"""The headline command at real scale (issue 22): `pipeline build` at the default budget on each teacher and
target, as a user runs it, one at a time. Each row: the plan printed before the first stage and what the
stages then took, the build's peak RSS (ru_maxrss of the build process and its children), and the accuracy
of the model it hands on with its KD-on-real-data ceiling where the teacher has real weights (the 224-px
teachers are torchvision models with random weights: time, memory and plan only).

    python benchmarks/scale.py [CASE ...]     # -> benchmarks/results/scale.{json,md}; rows of other cases kept
"""

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from datafree import machine  # noqa: E402

from pipeline.fileio import atomic_write_json, atomic_write_text  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "runs" / "bench-scale"
TEACHERS = WORK / "teachers"
# name -> (teacher, input size, target, the KD-real ceiling's row in datafree.json or None)
CASES = {
    "resnet20-fmnist-cpu": ("embedded:resnet20-fmnist", 28, "cpu", ("resnet20-fmnist", "resnet14")),
    "resnet20-fmnist-jetson": ("embedded:resnet20-fmnist", 28, "jetson", ("resnet20-fmnist", "resnet14")),
    "resnet34-224-jetson": ("resnet34.pt", 224, "jetson", None),
    "resnet50-100-224-cpu": ("resnet50-100.pt", 224, "cpu", None),
}
# the child's own peak, read by a wrapper process so earlier cases' children do not count
PEAK = "import resource,subprocess,sys; r=subprocess.run(sys.argv[1:]); " + (
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)"
)


def teacher_file(name: str) -> str:
    """The 224-px teachers as a user saves them: torch.save(model.state_dict())."""
    if name.startswith("embedded:"):
        return name
    import torch
    import torchvision

    TEACHERS.mkdir(parents=True, exist_ok=True)
    path = TEACHERS / name
    if not path.is_file():
        torch.manual_seed(0)
        model = torchvision.models.resnet34() if name == "resnet34.pt" else torchvision.models.resnet50(num_classes=100)
        torch.save(model.state_dict(), path)
    return str(path)


def ceiling(pair) -> float | None:
    if pair is None:
        return None
    rows = json.loads((RESULTS / "datafree.json").read_text())["rows"]
    return next(r["accuracy"] for r in rows if (r["teacher"], r["student"]) == pair and r["method"] == "kd-real")


def run_case(name: str, commit: str) -> dict:
    teacher, size, target, pair = CASES[name]
    out = WORK / name
    subprocess.run(["rm", "-rf", str(out)], check=True)
    command = [str(ROOT / ".venv" / "bin" / "pipeline"), "build", "--teacher", teacher_file(teacher)]
    command += ["--target", target, "--out", str(out), "--json"]
    start = time.monotonic()  # the whole command as a user waits for it: start-up, probe, stages, summary
    done = subprocess.run([sys.executable, "-c", PEAK, *command], capture_output=True, text=True, cwd=ROOT)
    wall_s = time.monotonic() - start
    (WORK / f"{name}.log").write_text(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{name}: exit {done.returncode}; see {WORK / f'{name}.log'}")
    peak_kb = int(done.stderr.strip().splitlines()[-1])
    manifest = json.loads((out / "manifest.json").read_text())
    plan, actual = manifest["plan"], manifest["actual"]
    walls = {stage["name"]: stage for stage in actual["stages"]}
    stages = [
        {
            "name": stage["name"],
            "planned_s": stage["planned_s"],
            "wall_s": walls[stage["name"]]["wall_s"],
            "steps": walls[stage["name"]]["steps"],
            "peak_rss_mb": walls[stage["name"]].get("peak_rss_mb"),  # the build's peak when the stage ended
        }
        for stage in plan["stages"]
    ]
    summary = json.loads(done.stdout)
    student = next((row for row in summary["rows"] if row["model"] == "student"), {})
    return {
        "case": name,
        "teacher": teacher,
        "input_size": size,
        "target": target,
        "budget": manifest["budget"]["name"],
        "recipe": manifest["recipe"],
        "planned_s": round(plan["planned_s"] + (plan["unit_costs"] or {}).get("probe_s", 0.0), 1),
        "wall_s": round(wall_s, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "plan": "; ".join(f"{s['name']} {s['steps'] or '-'} {s.get('unit') or ''}".strip() for s in plan["stages"]),
        "stages": stages,
        "accuracy": student.get("accuracy"),
        "ceiling_accuracy": ceiling(pair),
        "notes": summary.get("notes", []),
        "commit": commit,
        "cpu": machine()["cpu"],
    }


def main() -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    wanted = sys.argv[1:] or list(CASES)
    path = RESULTS / "scale.json"
    rows = {row["case"]: row for row in json.loads(path.read_text())["rows"]} if path.is_file() else {}
    for name in wanted:
        rows[name] = run_case(name, commit.stdout.strip())
        atomic_write_json(path, {"rows": [rows[n] for n in CASES if n in rows]})
    ordered = [rows[n] for n in CASES if n in rows]
    lines = [
        "# The headline command at real scale (issue 22)",
        "",
        "`python benchmarks/scale.py`: `pipeline build --teacher T --target X` at the default budget, one case at a "
        "time on 2 CPU cores; the 224-px teachers are torchvision models with random weights (time, memory, plan).",
        "",
        "| case | recipe | planned s | wall s | peak RSS MB | accuracy | KD-real ceiling | commit | CPU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in ordered:
        accuracy = "-" if r["accuracy"] is None else f"{r['accuracy']:.4f}"
        top = "-" if r["ceiling_accuracy"] is None else f"{r['ceiling_accuracy']:.4f}"
        lines.append(
            f"| {r['case']} | {r['recipe']} | {r['planned_s']} | {r['wall_s']} | {r['peak_rss_mb']} | {accuracy} | "
            f"{top} | {r['commit']} | {r['cpu']} |"
        )
    lines += ["", "Per stage (planned s / wall s / steps / the build's peak RSS MB when it ended):", ""]
    for r in ordered:
        parts = ", ".join(
            f"{s['name']} {s['planned_s']} / {s['wall_s']} / {s['steps']} / {s.get('peak_rss_mb', '-')}"
            for s in r["stages"]
        )
        lines.append(f"- {r['case']}: {parts}")
    atomic_write_text(RESULTS / "scale.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
