"""Issue 21's evidence that the redesign changed no result: one row of each benchmark, re-run at one commit,
beside the same row as it was committed before (same CPU family; a latency on another CPU is never compared).

    git worktree add /tmp/bw COMMIT          # the re-runs write where the committed rows are: not here
    (cd /tmp/bw && PYTHONPATH=/tmp/bw python benchmarks/...)   # each entry's `command`, one after another
    python benchmarks/reruns.py collect /tmp/bw --commit COMMIT   # the re-run rows -> benchmarks/results/reruns/
    python benchmarks/reruns.py report       # benchmarks/results/redesign-reruns.{json,md}

The re-runs are the benchmarks' own commands, run one after another on an otherwise idle machine, in a
checkout of one commit; `collect` stamps each re-run row with that commit and this CPU, and the committed row
stays where it was.
"""

import argparse
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RERUNS = RESULTS / "reruns"
sys.path.insert(0, str(ROOT / "benchmarks"))

# (benchmark, committed row, re-run row, command, [(metric, dotted key, kind)]); kind says how to read a change:
# "same" must not move (deterministic: sizes, counts, choices), "accuracy" moves only with training noise,
# "latency" / "time" with the machine's noise
ROWS = [
    (
        "quantize",
        "quantize/lenet5-fmnist-int8-synthetic-minmax.json",
        "quantize-lenet5-fmnist-int8-synthetic-minmax.json",
        "python benchmarks/quantize.py run lenet5-fmnist --precision int8 --calib synthetic --method minmax",
        [
            ("top-1 fp32", "metrics.accuracy_fp32", "same"),
            ("top-1 int8", "metrics.accuracy_quantized", "accuracy"),
            ("size bytes", "metrics.size_bytes", "same"),
            ("calibration images", "metrics.calibration_images", "same"),
            ("latency fp32 ms", "metrics.latency_fp32_ms", "latency"),
            ("latency int8 ms", "metrics.latency_quantized_ms", "latency"),
            ("speed-up", "metrics.speedup", "latency"),
        ],
    ),
    (
        "blockdrop",
        "blockdrop/synthesize-intel-xeon-2t.json",
        "blockdrop-synthesize.json",
        "python benchmarks/blockdrop.py synthesize",
        [("synthesis wall s (a time budget)", "wall_s", "time")],
    ),
    (
        "blockdrop",
        "blockdrop/drop-0.3-df-s0.json",
        "blockdrop-drop-0.3-df-s0.json",
        "python benchmarks/blockdrop.py drop --reduction 0.3",
        [
            ("dropped blocks", "dropped_blocks", "latency"),
            ("top-1 teacher", "teacher_accuracy", "same"),
            ("top-1 after drop", "accuracy", "accuracy"),
            ("latency reduction (drop stage)", "drop_stage_latency.latency_reduction", "latency"),
            ("bench teacher ms", "bench_latency_ms.teacher", "latency"),
            ("bench student ms", "bench_latency_ms.student", "latency"),
            ("fused max abs diff", "fused_max_abs_diff", "accuracy"),
            ("recovery iterations", "finetune.iterations", "same"),
            ("recovery final loss", "finetune.final_loss", "accuracy"),
        ],
    ),
    (
        "budget",
        "budget/search-0.7.json",
        "budget-search-0.7.json",
        "python benchmarks/budget.py run --fractions 0.7 --skip-baselines",
        [
            ("chosen", "search_metrics.chosen.name", "accuracy"),
            ("label-free expected loss", "search_metrics.chosen.expected_loss_vs_teacher", "accuracy"),
            ("ratio to the teacher (same session)", "search_metrics.chosen.ratio_to_teacher", "latency"),
            ("precision", "search_metrics.precision", "accuracy"),
            ("top-1", "accuracy", "accuracy"),
            ("teacher ms (search)", "search_metrics.teacher_ms", "latency"),
        ],
    ),
    (
        "budget",
        "budget/cached-0.7.json",
        "budget-cached-0.7.json",
        "python benchmarks/budget.py run --fractions 0.7 --skip-baselines",
        # the fresh search's time depends on what the folder had measured before (the committed run searched
        # 0.9 first); with every measurement cached, the two runs do the same work
        [("search s, every measurement cached", "search_s", "time")],
    ),
    (
        "budget",
        "budget/int8.json",
        "budget-int8.json",
        "python benchmarks/budget.py run --fractions 0.7 --skip-baselines",
        [("top-1 INT8 alone", "accuracy", "accuracy")],
    ),
    (
        "datafree",
        "datafree/lenet-bn-inversion+jitter+kd8-quick-s0-intel-xeon-2t.json",
        "datafree-lenet-bn-inversion+jitter+kd8-quick-s0.json",
        "python benchmarks/datafree.py method --pair lenet --method bn-inversion+jitter+kd8 --seed 0 --budget quick",
        [
            ("top-1 student", "accuracy", "accuracy"),
            ("synthetic top-1 agreement", "synthetic_top1_agreement", "accuracy"),
            ("student steps", "student_steps", "time"),
            ("transfer images", "transfer_images", "time"),
            ("wall s", "wall_s", "time"),
        ],
    ),
]
# what the re-runs did not do, said beside the table
NOTES = [
    "budget: the run's step 4, the independent re-measurement of the teacher, the choice and the single techniques"
    " (remeasured.json), stopped with an error: under --skip-baselines the kept drop-0.7 record named a model of"
    " another checkout (benchmarks/budget.py now skips such a record and keeps the other budgets' sessions). The"
    " search's own same-session ratio to the teacher stands in for it above.",
    "budget: the fresh search took 859 s, the first search in an empty folder; the committed run searched 0.9"
    " first (998 s) and 0.7 second (266 s, reusing what 0.9 had measured), so only the all-cached search time is"
    " set beside its committed figure.",
    "datafree: the run is bounded by wall time; this session's machine made 14.7 % more steps in the same 841 s"
    " (28,784 against 25,096), which is the likeliest reason its top-1 is 1.05 points above the committed seed 0"
    " (seeds 0-2 on the Xeon: 84.57, 84.81, 84.87 %). A step-bounded re-run was not made.",
    "The remote path that 5c9d6ad changed has no benchmark row; tests/test_remote.py measures it against a loopback"
    " sshd.",
]
# the gate's rows are rates over many trials: the re-run writes its own table (gate-question.json), read beside the
# committed one of the same CPU family (gate.json)
GATE = ("gate-question.json", "gate.json")


def _get(record: dict, dotted: str):
    for key in dotted.split("."):
        if not isinstance(record, dict) or key not in record:
            return None
        record = record[key]
    return record


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def _change(before, after, kind: str, metric: str = "") -> str:
    if before is None:
        return "not recorded before"
    if (metric.startswith("top-1") or kind == "rate") and isinstance(before, float) and isinstance(after, float):
        return "same" if before == after else f"{100 * (after - before):+.2f} points"
    if kind == "same" and before != after:
        return "MOVED (must not)"
    if isinstance(before, list) and isinstance(after, list) and before != after:
        # dropped blocks: the greedy order follows the noisy per-block savings; the set is what is deployed
        return "same set, other order" if sorted(before) == sorted(after) else "differs"
    if isinstance(before, (int, float)) and isinstance(after, (int, float)) and before:
        relative = f"{100 * (after - before) / abs(before):+.1f} %"
        return "same" if before == after else relative
    return "same" if before == after else "differs"


def report() -> None:
    from datafree import cpu_name

    from pipeline.fileio import atomic_write_json, atomic_write_text

    rows = []
    for benchmark, committed, rerun, command, metrics in ROWS:
        before, after = json.loads((RESULTS / committed).read_text()), json.loads((RERUNS / rerun).read_text())
        before_commit = _git("log", "-1", "--format=%h", "--", str(RESULTS / committed))
        for metric, key, kind in metrics:
            rows.append(
                {
                    "benchmark": benchmark,
                    "row": Path(committed).stem,
                    "metric": metric,
                    "kind": kind,
                    "before": _get(before, key),
                    "after": _get(after, key),
                    "change": _change(_get(before, key), _get(after, key), kind, metric),
                    "before_commit": before_commit,
                    "before_cpu": _get(before, "machine.cpu"),
                    "command": command,
                    "commit": after["rerun_commit"],
                    "cpu": after["rerun_cpu"],
                }
            )
    gate_after, gate_before = (json.loads((RESULTS / name).read_text()) for name in GATE)
    by_level = {row["slowdown"]: row for row in gate_before["rows"]}
    for row in gate_after["rows"]:
        old = by_level.get(row["slowdown"], {})
        for metric in ("alarm_rate", "unmeasurable_rate", "median_rounds"):
            rows.append(
                {
                    "benchmark": "gate",
                    "row": f"slowdown {row['slowdown']:.2f}",
                    "metric": metric,
                    "kind": "rate",
                    "before": old.get(metric),
                    "after": row.get(metric),
                    "change": _change(old.get(metric), row.get(metric), "rate"),
                    "before_commit": _git("log", "-1", "--format=%h", "--", str(RESULTS / GATE[1])),
                    "before_cpu": gate_before["machine"]["cpu"],
                    "before_trials": old.get("trials"),
                    "trials": row["trials"],
                    "command": gate_after["command"],
                    "commit": row["commit"],
                    "cpu": row["cpu"],
                }
            )
    commits = {row["commit"] for row in rows}
    assert len(commits) == 1, f"re-run rows from several commits: {commits}"
    payload = {
        "rows": rows,
        "recorded_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu": cpu_name(),
    }
    atomic_write_json(RESULTS / "redesign-reruns.json", payload)
    lines = [
        "# One row of each benchmark, re-run after the redesign (issue 21)",
        "",
        f"Re-runs at commit {rows[0]['commit']} on {rows[0]['cpu']}, one after another; `before` is the row as"
        " committed (its commit and CPU in the JSON: the same CPU name, another session's VM). Kinds: `same` must"
        " not move; `accuracy` moves with training noise, and a time-budgeted training run also with the machine's"
        " speed (more steps in the same seconds); `latency` and `time` with the machine: absolute milliseconds"
        " differ between sessions' VMs, so read the ratios measured within one session (speed-up, latency"
        " reduction, ratio to the teacher); `rate` over the trials shown (gate.json: 60 A/A and 40 trials at 10 %;"
        " the re-run 20 and 20).",
        "",
        "| benchmark | row | metric | kind | before | after | change |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['benchmark']} | {row['row']} | {row['metric']} | {row['kind']} | {_cell(row['before'])} "
            f"| {_cell(row['after'])} | {row['change']} |"
        )
    lines += ["", "Not shown above:", "", *[f"- {note}" for note in NOTES]]
    atomic_write_text(RESULTS / "redesign-reruns.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return "—" if value is None else str(value)


def collect(checkout: Path, commit: str) -> None:
    """Copy each re-run row from the checkout that ran the commands, stamped with its commit and this CPU."""
    RERUNS.mkdir(parents=True, exist_ok=True)
    from datafree import cpu_description

    cpu = cpu_description()
    for _, committed, rerun, _, _ in ROWS:
        record = json.loads((checkout / "benchmarks" / "results" / committed).read_text())
        record.update(rerun_commit=commit, rerun_cpu=cpu)
        (RERUNS / rerun).write_text(json.dumps(record, indent=1) + "\n")
    for name in GATE[:1]:
        for suffix in (".json", ".md"):
            source = checkout / "benchmarks" / "results" / Path(name).with_suffix(suffix)
            (RESULTS / source.name).write_text(source.read_text())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    collecting = sub.add_parser("collect")
    collecting.add_argument("checkout", type=Path, help="the checkout the re-runs ran in")
    collecting.add_argument("--commit", required=True, help="its commit")
    sub.add_parser("report")
    args = parser.parse_args()
    if args.command == "collect":
        collect(args.checkout, args.commit)
    else:
        report()
