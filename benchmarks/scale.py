"""The headline command at real scale (issue 22): `pipeline build` at the default budget on each teacher and
target, as a user runs it, one at a time. Each row: the plan printed before the first stage and what the
stages then took, the build's peak RSS (ru_maxrss of the build process and its children), and the accuracy
of the model it hands on with its KD-on-real-data ceiling where the teacher has real weights (the 224-px
teachers are torchvision models with random weights: time, memory and plan only).

    python benchmarks/scale.py [--table NAME] [CASE ...]   # -> benchmarks/results/NAME.{json,md} (default scale);
                                                          # rows of other cases kept
    python benchmarks/scale.py [--table NAME] --ceilings  # re-read the KD-real ceilings (measured after a row)

All rows of one table must come from one commit: a case measured at a later commit than the others goes to its
own --table until the whole table is re-run. The torchvision resnet18 teacher (item 9) is trained by the project's
own command, `pipeline teacher train --arch resnet18` (about 7 min on 2 cores), once.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from datafree import PAIRS, commit, cpu_description  # noqa: E402

from pipeline.fileio import atomic_write_json, atomic_write_text  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "runs" / "bench-scale"
TEACHERS = WORK / "teachers"
# name -> (teacher, input size, target, the KD-real ceiling's row in datafree.json or None)
CASES = {
    "resnet20-fmnist-cpu": ("embedded:resnet20-fmnist", 28, "cpu", ("resnet20-fmnist", "resnet14")),
    "resnet20-fmnist-jetson": ("embedded:resnet20-fmnist", 28, "jetson", ("resnet20-fmnist", "resnet14")),
    "resnet18-fmnist-cpu": ("resnet18-fmnist.pt", 28, "cpu", ("resnet18-fmnist.pt", "resnet14")),
    "resnet34-224-jetson": ("resnet34.pt", 224, "jetson", None),
    "resnet50-100-224-cpu": ("resnet50-100.pt", 224, "cpu", None),
}
# the child's own peak, read by a wrapper process so earlier cases' children do not count
PEAK = "import resource,subprocess,sys; r=subprocess.run(sys.argv[1:]); " + (
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)"
)


TORCHVISION_TEACHER_EPOCHS = 5


def teacher_file(name: str) -> str:
    """The 224-px teachers as a user saves them: torch.save(model.state_dict()); the 28-px torchvision resnet18
    trained on Fashion-MNIST by `pipeline teacher train`."""
    if name.startswith("embedded:"):
        return name
    if name == "resnet18-fmnist.pt":
        path = ROOT / PAIRS["tvresnet18"][0]  # where datafree.py's ceiling reads it too
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file():
            command = [str(ROOT / ".venv" / "bin" / "pipeline"), "teacher", "train", "--arch", "resnet18"]
            command += ["--epochs", str(TORCHVISION_TEACHER_EPOCHS), "--seed", "0", "--out", str(path)]
            subprocess.run(command, check=True, cwd=ROOT)
        return str(path)
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
    # a pair not in the report yet: its run file from `python benchmarks/datafree.py ceiling --pair P`
    rows += [json.loads(path.read_text()) for path in (RESULTS / "datafree").glob("*-kd-real-*.json")]
    found = [
        r["accuracy"] for r in rows if (Path(r["teacher"]).name, r["student"]) == pair and r["method"] == "kd-real"
    ]
    return found[0] if found else None


def run_case(name: str, commit: str, evidence: Path) -> dict:
    teacher, size, target, pair = CASES[name]
    out = WORK / name
    subprocess.run(["rm", "-rf", str(out)], check=True)
    command = [str(ROOT / ".venv" / "bin" / "pipeline"), "build", "--teacher", teacher_file(teacher)]
    command += ["--target", target, "--out", str(out), "--json"]
    # a first build of the teacher: nothing in the export cache (export/onnx_cache.py) from an earlier row or run
    with tempfile.TemporaryDirectory(prefix="scale-export-cache-") as cache:
        env = {**os.environ, "PIPELINE_EXPORT_CACHE": cache}
        start = time.monotonic()  # the whole command as a user waits for it: start-up, probe, stages, summary
        done = subprocess.run([sys.executable, "-c", PEAK, *command], capture_output=True, text=True, cwd=ROOT, env=env)
        wall_s = time.monotonic() - start
    (WORK / f"{name}.log").write_text(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{name}: exit {done.returncode}; see {WORK / f'{name}.log'}")
    peak_kb = int(done.stderr.strip().splitlines()[-1])
    manifest_text = (out / "manifest.json").read_text()
    manifest = json.loads(manifest_text)
    evidence.mkdir(parents=True, exist_ok=True)  # the build's own record beside the row, for a reader to check
    atomic_write_text(evidence / f"{name}.manifest.json", manifest_text)
    atomic_write_text(evidence / f"{name}.log", done.stderr)
    plan, actual = manifest["plan"], manifest["actual"]
    walls = {stage["name"]: stage for stage in actual["stages"]}
    stages = [
        {
            "name": stage["name"],
            "planned_s": stage["planned_s"],
            "wall_s": walls[stage["name"]]["wall_s"],
            "steps": walls[stage["name"]]["steps"],
            "peak_rss_mb": walls[stage["name"]].get("peak_rss_mb"),  # the build's peak when the stage ended
            # drop's parts (table, selection, fine-tune, final timing), planned and taken
            **(
                {"phases_s": {"planned": stage["phases_s"], "wall": walls[stage["name"]].get("phases_s")}}
                if stage.get("phases_s")
                else {}
            ),
        }
        for stage in plan["stages"]
    ]
    summary = json.loads(done.stdout)
    student = next((row for row in summary["rows"] if row["model"] == "student"), {})
    teacher_row = next((row for row in summary["rows"] if row["model"] == "teacher"), {})
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
        "teacher_accuracy": teacher_row.get("accuracy"),
        "ceiling_accuracy": ceiling(pair),
        "notes": summary.get("notes", []),
        "commit": commit,
        "cpu": cpu_description(),  # family and model: "AMD EPYC" alone names several CPUs
    }


def main() -> None:
    arguments = sys.argv[1:]
    table = "scale"
    if arguments[:1] == ["--table"]:
        table, arguments = arguments[1], arguments[2:]
    path = RESULTS / f"{table}.json"
    rows = {row["case"]: row for row in json.loads(path.read_text())["rows"]} if path.is_file() else {}

    def save() -> None:
        atomic_write_json(path, {"rows": [rows[n] for n in CASES if n in rows]})

    if arguments == ["--ceilings"]:  # the ceiling is a separate run (datafree.py ceiling); the build is not re-run
        for row in rows.values():
            row["ceiling_accuracy"] = ceiling(CASES[row["case"]][3])
        save()
    else:
        unknown = [name for name in arguments if name not in CASES]
        if unknown:
            raise SystemExit(f"unknown case {', '.join(unknown)}; cases: {', '.join(CASES)}")
        head = commit()
        for name in arguments or list(CASES):
            rows[name] = run_case(name, head, RESULTS / table)
            save()
    render(table, [rows[n] for n in CASES if n in rows])


def render(table: str, ordered: list[dict]) -> None:
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
        if r["ceiling_accuracy"] and r["accuracy"] is not None:
            top += f" ({r['accuracy'] / r['ceiling_accuracy']:.1%} of it)"
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
        for s in r["stages"]:
            if s.get("phases_s") and s["phases_s"]["wall"]:
                planned, wall = s["phases_s"]["planned"], s["phases_s"]["wall"]
                lines.append(
                    f"  - {s['name']} (planned s / wall s): "
                    + ", ".join(f"{part} {planned[part]} / {wall.get(part, '-')}" for part in planned)
                )
    atomic_write_text(RESULTS / f"{table}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
