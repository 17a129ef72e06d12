"""Block latency tables at 224 px (issue 22 item 3): torchvision resnet34 (1000 classes) and resnet50 (100
classes, as a fine-tuned model a user brings), random weights (latency does not depend on them), target `cpu`,
measured as `pipeline drop --target cpu` measures them at the quick budget: the drop stage's latency settings,
one representative per block class, rounds until every class's 95 % interval is tight or the table's time share
is spent (then flagged). Then the additivity check: the blocks the selection drops at PRACTISE's 22.1 %
operating point, dropped together and timed against the full model (20 interleaved rounds), against the sum
of their table savings.

    python benchmarks/latency_table.py run resnet34      # one row per run: benchmarks/results/latency_table/
    python benchmarks/latency_table.py run resnet50
    python benchmarks/latency_table.py report            # -> benchmarks/results/latency_table.{json,md}

The selection's candidate savings come from the table (summed), not from a new timing per step as in the drop
stage: only the plan is timed, which is what the additivity check needs. With random weights the recoverability
term carries no information about accuracy (Gaussian-noise images, 3 adapter steps); it only lets the same code
pick the blocks. No accuracy is claimed.
"""

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from datafree import machine, machine_tag  # noqa: E402  (the machine record every benchmark writes)

from pipeline.fileio import atomic_write_json, atomic_write_text  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
RUNS = RESULTS / "latency_table"
PRACTISE_REDUCTION = 0.221  # the paper's ResNet-34 operating point
MODELS = {"resnet34": 1000, "resnet50": 100}  # torchvision arch -> classes


def _commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()


def run(arch: str) -> None:
    import torch

    from pipeline.budgets import get_budget
    from pipeline.drop.blocks import droppable_blocks, without_blocks
    from pipeline.drop.latency_table import additivity, block_latency_table, cache_key, format_table, time_models
    from pipeline.drop.recoverability import RecoverabilityProbe, RecoverabilitySettings
    from pipeline.drop.select import LatencyBudget, greedy_drop
    from pipeline.measure import MIN_ROUNDS, runtime_version
    from pipeline.models import create_model
    from pipeline.preprocess import default_preprocess
    from pipeline.recipes.drop_specs import target_latency
    from pipeline.targets import load_target

    torch.manual_seed(0)
    model = create_model(arch, num_classes=MODELS[arch]).eval()
    preprocess = default_preprocess(3, 224, 224)
    budget = get_budget("quick")
    settings = target_latency(load_target("cpu"), budget, budget.drop_latency_rounds)  # the drop stage's
    started = time.monotonic()
    table = block_latency_table(
        model, preprocess, droppable_blocks(model), settings, cache_key(arch, "cpu", settings, (3, 224, 224))
    )
    table_s = time.monotonic() - started
    print(format_table(table), flush=True)
    probe = RecoverabilityProbe(
        model,
        torch.randn(48, 3, 224, 224),
        (3, 224, 224),
        RecoverabilitySettings(steps=3, batch_size=4, train_images=32, eval_images=16),
    )
    savings = {row["block"]: row["saving_ms"] for row in table["blocks"]}
    plan_timing = replace(settings, warmup=3, rounds=MIN_ROUNDS)

    def measure(dropped, candidates):
        if candidates:  # from the table: the current model is the full one less the dropped blocks' savings
            current = table["full_ms"] - sum(savings[name] for name in dropped)
            return {"full": table["full_ms"], "current": current, **{c: current - savings[c] for c in candidates}}
        timed = time_models(
            {"full": model, "current": without_blocks(model, dropped)}, preprocess, plan_timing, label="the plan"
        )
        return {"full": timed["full"]["median_ms"], "current": timed["current"]["median_ms"]}

    selection = greedy_drop(table, LatencyBudget(reduction=PRACTISE_REDUCTION), probe, measure)
    last = selection["verifications"][-1]
    checked = additivity(table, selection["dropped"], last["full_ms"], last["dropped_ms"])
    measured = [row for row in table["blocks"] if row["class"] == row["block"]]
    here = machine()
    record = {
        "model": f"{arch} ({MODELS[arch]} classes, random weights)",
        "input_size": 224,
        "target": "cpu",
        "budget": "quick",
        "runtime": f"onnxruntime {runtime_version('onnxruntime')}, local, {settings.threads} threads",
        "commit": _commit(),
        "cpu": here["cpu"],
        "table_s": round(table_s, 1),
        "table_rounds": table["rounds"],
        "blocks": len(table["blocks"]),
        "block_classes": table["classes"],
        "classes_tight": sum(1 for row in measured if row["interval_tight"]),
        "flagged_classes": table["flagged_classes"],
        "full_ms": table["full_ms"],
        "dropped_blocks": selection["dropped"],
        "plan_full_ms": last["full_ms"],
        "plan_dropped_ms": last["dropped_ms"],
        "measured_reduction": last["measured_reduction"],
        "summed_saving_ms": checked["summed_saving_ms"],
        "measured_saving_ms": checked["measured_saving_ms"],
        "additivity_gap": checked["additivity_gap"],
        "wall_s": round(time.monotonic() - started, 1),
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": here,
        "command": " ".join(["python", "benchmarks/latency_table.py", *sys.argv[1:]]),
        "table": table,
    }
    atomic_write_json(RUNS / f"{arch}-224-{machine_tag()}.json", record)
    print(json.dumps({k: v for k, v in record.items() if k != "table"}, indent=1))


def report() -> None:
    from pipeline.drop.latency_table import format_table

    records = [json.loads(path.read_text()) for path in sorted(RUNS.glob("*.json"))]
    rows = [{k: v for k, v in record.items() if k != "table"} for record in records]
    atomic_write_json(RESULTS / "latency_table.json", {"rows": rows})
    lines = [
        "# Block latency tables at 224 px (issue 22 item 3)",
        "",
        "Generated by `python benchmarks/latency_table.py report` from benchmarks/results/latency_table/*.json; "
        "each row's command, commit and CPU are in it. Random weights: latency only, no accuracy claimed. "
        "Target: the half-width of each block class's 95 % interval within 25 % of its saving (else flagged); "
        "additivity gap |measured - summed| / measured of the plan's savings within 10 %; table within 3 minutes.",
        "",
        "| model | CPU | commit | table s | rounds | blocks / classes | classes tight | flagged | full ms | plan "
        "| measured reduction | summed / measured saving ms | additivity gap |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        gap = "—" if row["additivity_gap"] is None else f"{100 * row['additivity_gap']:.1f} %"
        lines.append(
            f"| {row['model']} | {row['cpu']} | {row['commit']} | {row['table_s']:.0f} | {row['table_rounds']} | "
            f"{row['blocks']} / {row['block_classes']} | {row['classes_tight']} | "
            f"{', '.join(row['flagged_classes']) or '—'} | {row['full_ms']:.2f} | {', '.join(row['dropped_blocks'])} "
            f"| {100 * row['measured_reduction']:.1f} % | {row['summed_saving_ms']:.2f} / "
            f"{row['measured_saving_ms']:.2f} | {gap} |"
        )
    for record in records:
        lines += ["", f"## {record['model']}: `{record['command']}` ({record['runtime']})", "", "```"]
        lines += [format_table(record["table"]), "```"]
    atomic_write_text(RESULTS / "latency_table.md", "\n".join(lines) + "\n")
    print("\n".join(lines[: 8 + len(rows)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("run").add_argument("arch", choices=sorted(MODELS))
    sub.add_parser("report")
    args = parser.parse_args()
    run(args.arch) if args.mode == "run" else report()


if __name__ == "__main__":
    main()
