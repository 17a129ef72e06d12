"""Latency-budget search on the embedded BN-ResNet teacher (resnet20-fmnist), cpu target (ONNX Runtime, 2 threads).

    python benchmarks/budget.py run [--fractions 0.9 0.7 0.5] [--budget quick]
        1. `pipeline search` at each budget, in order, in ONE run folder: the first search measures everything
           (search_s), the later ones reuse what the earlier ones cached;
        2. each budget again in a fresh folder seeded with that cache (cached_search_s: a search whose every
           measurement is already known);
        3. the best single technique under the same budget: `pipeline drop` (blocks alone, fp32) and
           `pipeline quantize --precision int8` (INT8 alone), each in its own folder;
        4. one independent interleaved timing of the teacher and every model handed on (remeasured_latency_ms):
           a choice "meets" its budget when its median is below fraction x the teacher's median of that session.
    python benchmarks/budget.py report    # benchmarks/results/budget.{json,md} from benchmarks/results/budget/*.json

Every folder starts from the blockdrop benchmark's data-free transfer set (`python benchmarks/blockdrop.py
synthesize`, quick budget, 300 s, not counted in any search time) and its latency-table cache. Accuracy: the
handed-on ONNX model on the full Fashion-MNIST test split, measured by the bench stage after the choice.
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datafree import machine  # noqa: E402

from pipeline.fileio import atomic_write_json, atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RECORDS = RESULTS / "budget"
WORK = ROOT / "runs" / "bench-budget"
SHARED = ROOT / "runs" / "bench-blockdrop" / "shared-transfer-set"


def command() -> str:
    return " ".join(["python", "benchmarks/budget.py", *sys.argv[1:]])


def seeded(name: str, cache_from: Path | None = None) -> Path:
    """A run folder holding the shared transfer set (its synthesize stage is then up to date) and a cache."""
    folder = WORK / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if not (SHARED / "synthesize").is_dir():
        sys.exit("run `python benchmarks/blockdrop.py synthesize` first (the shared data-free transfer set)")
    shutil.copytree(SHARED / "synthesize", folder / "synthesize")
    manifest = json.loads((SHARED / "manifest.json").read_text())
    manifest["stages"] = {"synthesize": manifest["stages"]["synthesize"]}
    atomic_write_json(folder / "manifest.json", manifest)
    cache = cache_from or SHARED / "cache"
    if cache.is_dir():
        shutil.copytree(cache, folder / "cache")
    return folder


def build(folder: Path, budget: str, shared_transfer_set: bool = True, **options) -> dict:
    from pipeline.recipes.build import run_build
    from pipeline.recipes.options import BuildOptions

    started = time.monotonic()
    summary = run_build(BuildOptions(out=folder, budget=budget, eval="fmnist", command=command(), **options))
    stages = json.loads((folder / "manifest.json").read_text())["stages"]
    if shared_transfer_set:  # the 300 s synthesis is not part of what the search costs
        assert (
            stages["synthesize"]["wall_s"]
            == json.loads((SHARED / "manifest.json").read_text())["stages"]["synthesize"]["wall_s"]
        ), "the shared transfer set was not reused"
    handed_on = folder / ("quantize/model.onnx" if "quantize" in stages else "export/student.onnx")
    bench = stages["bench"]["metrics"]
    return {
        "wall_s": round(time.monotonic() - started, 1),
        "stages": {k: v["wall_s"] for k, v in stages.items()},
        "accuracy": bench["student"]["accuracy"],
        "teacher_accuracy": bench["teacher"]["accuracy"],
        "bench_latency_ms": {m: bench[m]["latency"]["median_ms"] for m in ("teacher", "student")},
        "onnx": str(handed_on),
        "teacher_onnx": str(folder / "export" / "teacher.onnx"),
        "summary_rows": summary["rows"],
        "stage_metrics": stages,
    }


def run(fractions: list[float], budget: str, reuse: bool = False, baselines: bool = True) -> None:
    """`reuse`: start from the cache of the previous run's search folder (its fine-tunes, exports and base
    measurements) after a change to the decision rule; the fresh search times of that previous run are kept
    (they are what a first search costs) and this run's own search times become cached_search_s."""
    RECORDS.mkdir(parents=True, exist_ok=True)
    previous = (
        {
            f: json.loads((RECORDS / f"search-{f}.json").read_text())
            for f in fractions
            if (RECORDS / f"search-{f}.json").is_file()
        }
        if reuse
        else {}
    )
    if reuse:
        kept = WORK / "previous-cache"
        if kept.exists():
            shutil.rmtree(kept)
        shutil.copytree(WORK / "search" / "cache", kept)
    shared_search = seeded("search", cache_from=WORK / "previous-cache" if reuse else None)
    for fraction in fractions:  # 1. one folder, budgets in order: later searches reuse the cache
        result = build(shared_search, budget, recipe="search", latency_reduction=round(1 - fraction, 4))
        search = result["stage_metrics"]["search"]
        fresh = previous.get(fraction, {}).get("search_s_fresh", previous.get(fraction, {}).get("search_s"))
        record = {
            "fraction": fraction,
            "search_s": fresh if reuse else search["wall_s"],
            "search_s_fresh": fresh if reuse else search["wall_s"],
            "search_s_fresh_from": previous.get(fraction, {}).get("recorded_at") if reuse else None,
            "search_s_this_run": search["wall_s"],
            "search_metrics": search["metrics"],
            **{k: v for k, v in result.items() if k != "stage_metrics"},
        }
        record["search_json"] = json.loads((shared_search / "search" / "search.json").read_text())
        shutil.copy(shared_search / "search" / "pareto.png", RECORDS / f"pareto-{fraction}.png")
        shutil.copy(shared_search / "search" / "pareto.csv", RECORDS / f"pareto-{fraction}.csv")
        handed_on = Path(result["onnx"])
        keep = WORK / "chosen" / f"{fraction}{handed_on.suffix}"
        keep.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(handed_on, keep)
        record["onnx"] = str(keep)
        write(f"search-{fraction}", record)
    for fraction in fractions:  # 2. every measurement cached
        if reuse:  # this run's searches above were the cached ones
            write(
                f"cached-{fraction}",
                {
                    "fraction": fraction,
                    "search_s": json.loads((RECORDS / f"search-{fraction}.json").read_text())["search_s_this_run"],
                    "chosen": "as search-" + str(fraction),
                },
            )
            continue
        folder = seeded(f"cached-{fraction}", cache_from=shared_search / "cache")
        result = build(folder, budget, recipe="search", latency_reduction=round(1 - fraction, 4))
        write(
            f"cached-{fraction}",
            {
                "fraction": fraction,
                "search_s": result["stage_metrics"]["search"]["wall_s"],
                "chosen": result["stage_metrics"]["search"]["metrics"]["chosen"]["name"],
            },
        )
    for fraction in fractions if baselines else []:  # 3. single techniques (--skip-baselines keeps the drop rows)
        folder = seeded(f"drop-{fraction}", cache_from=shared_search / "cache")
        try:
            result = build(folder, budget, recipe="drop", latency_reduction=round(1 - fraction, 4))
            record = {
                "fraction": fraction,
                "technique": "block dropping (fp32)",
                **result,
                "dropped_blocks": result["stage_metrics"]["drop"]["metrics"]["dropped_blocks"],
            }
        except Exception as error:  # noqa: BLE001 - "cannot reach the budget" is a result here
            record = {"fraction": fraction, "technique": "block dropping (fp32)", "failed": str(error)}
        record.pop("stage_metrics", None)
        write(f"drop-{fraction}", record)
    folder = seeded("int8", cache_from=shared_search / "cache")
    # `pipeline quantize` synthesises its own (60 s) calibration set: no distill or drop stage needs more
    result = build(folder, budget, shared_transfer_set=False, recipe="quantize", precision="int8")
    result.pop("stage_metrics")
    write("int8", {"technique": "INT8 alone", **result})
    remeasure(fractions)


def remeasure(fractions: list[float], rounds: int = 40) -> None:
    """4. Independent of every search: per budget, one interleaved session of the teacher, the choice and the
    single-technique models; each model's ratio to the teacher is the measurement layer's paired ratio (trimmed mean of
    its per-round ratios, as the gate and the search judge)."""
    import numpy as np

    from pipeline.measure import LatencySettings, example_input, paired_ratio, time_onnx_models
    from pipeline.preprocess import preprocess_from_onnx

    records = {p.stem: json.loads(p.read_text()) for p in RECORDS.glob("*.json")}
    teacher = Path(records[f"search-{fractions[0]}"]["teacher_onnx"])
    settings = LatencySettings(
        runtime="onnxruntime", batch=1, threads=2, warmup=50, runs=200, rounds=rounds, max_seconds=0.5
    )
    sessions = {}
    for fraction in fractions:
        models = {"teacher": teacher}
        for name in (f"search-{fraction}", f"drop-{fraction}", "int8"):
            if records.get(name, {}).get("onnx") and not records[name].get("failed"):
                if not Path(records[name]["onnx"]).is_file():  # a record kept by --skip-baselines, made elsewhere
                    print(f"{name}: its model {records[name]['onnx']} is not here; not re-measured", file=sys.stderr)
                    continue
                models[name] = Path(records[name]["onnx"])
        timed = time_onnx_models(
            models,
            settings,
            example_input(settings, preprocess_from_onnx(teacher, None)),
            rounds,
            label=f"independent re-measurement, budget {fraction}",
        )
        teacher_rounds = np.asarray(timed["teacher"]["round_medians_ms"])
        sessions[str(fraction)] = {
            "teacher_ms": timed["teacher"]["median_ms"],
            "models": {
                name: {
                    "median_ms": entry["median_ms"],
                    "cv": entry["cv"],
                    "ratio_to_teacher": paired_ratio(entry["round_medians_ms"], teacher_rounds).ratio,
                }
                for name, entry in timed.items()
            },
        }
    stamp = {
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "command": command(),
    }
    path = RECORDS / "remeasured.json"
    # a run over some of the budgets replaces only their sessions; each session says when and where it was made
    kept = json.loads(path.read_text())["sessions"] if path.is_file() else {}
    atomic_write_json(
        path,
        {
            "sessions": {**kept, **{fraction: {**session, **stamp} for fraction, session in sessions.items()}},
            "rounds": rounds,
            "settings": settings.to_dict(),
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(),
            "command": command(),
        },
    )
    report()


def write(name: str, record: dict) -> None:
    record = {
        **record,
        "name": name,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "command": command(),
    }
    atomic_write_json(RECORDS / f"{name}.json", record)
    print(
        json.dumps(
            {k: v for k, v in record.items() if k not in ("search_json", "summary_rows", "search_metrics")},
            indent=1,
            default=str,
        )[:3000]
    )


def report() -> None:
    records = {p.stem: json.loads(p.read_text()) for p in RECORDS.glob("*.json")}
    timing = records["remeasured"]
    fractions = sorted((r["fraction"] for n, r in records.items() if n.startswith("search-")), reverse=True)
    rows, lines = [], []
    for fraction in fractions:
        search, cached = records[f"search-{fraction}"], records.get(f"cached-{fraction}", {})
        chosen = search["search_json"]["chosen"]
        session = timing["sessions"].get(str(fraction))
        if session is None:
            print(f"budget {fraction}: no independent re-measurement (run `remeasure`); left out", file=sys.stderr)
            continue
        teacher_ms, models = session["teacher_ms"], session["models"]
        remeasured = models[f"search-{fraction}"]
        singles = []
        drop = records.get(f"drop-{fraction}", {})
        if drop and not drop.get("failed") and f"drop-{fraction}" in models:
            singles.append(
                (
                    "block dropping alone: " + ", ".join(drop["dropped_blocks"]),
                    drop["accuracy"],
                    models[f"drop-{fraction}"]["ratio_to_teacher"],
                )
            )
        int8 = records.get("int8")
        if int8 and "int8" in models:
            singles.append(("INT8 alone", int8["accuracy"], models["int8"]["ratio_to_teacher"]))
        meeting = [s for s in singles if s[2] <= fraction]
        best_single = max(meeting, key=lambda s: s[1]) if meeting else None
        row = {
            "budget_fraction": fraction,
            "budget_ms": round(fraction * teacher_ms, 4),
            "chosen": chosen["name"] + (f" ({', '.join(chosen['dropped'])})" if chosen["dropped"] else ""),
            "remeasured_latency_ms": round(remeasured["median_ms"], 4),
            "remeasured_ratio": round(remeasured["ratio_to_teacher"], 4),
            "meets_budget_remeasured": remeasured["ratio_to_teacher"] <= fraction,
            "singles_remeasured_ratio": {s[0]: round(s[2], 4) for s in singles},
            "teacher_ms_remeasured": teacher_ms,
            "accuracy": search["accuracy"],
            "best_single_accuracy": best_single[1] if best_single else None,
            "best_single": best_single[0] if best_single else "none met the budget",
            "search_s": search["search_s"],
            "cached_search_s": cached.get("search_s"),
            "search_limit_ms": search["search_json"]["limit_ms"],
            "search_measured_ms": chosen["latency_ms"],
            "shortlist": len(search["search_json"]["candidates"]),
        }
        rows.append(row)
        single = "—" if best_single is None else f"{100 * best_single[1]:.2f} %"
        cached_s = "—" if row["cached_search_s"] is None else f"{row['cached_search_s']:.0f}"
        lines.append(
            f"| {fraction:.0%} | {row['budget_ms']:.4f} | {row['chosen']} | {row['remeasured_latency_ms']:.4f} "
            f"({row['remeasured_ratio']:.3f}) | "
            f"{'yes' if row['meets_budget_remeasured'] else 'NO'} | {100 * row['accuracy']:.2f} % | "
            f"{row['best_single']} | {single} | {row['search_s']:.0f} | {cached_s} | {row['shortlist']} |"
        )
    payload = {
        "rows": rows,
        "machine": timing["machine"],
        "commands": sorted({r.get("command") for r in records.values() if r.get("command")}),
    }
    atomic_write_json(RESULTS / "budget.json", payload)
    teacher_accuracy = records[f"search-{fractions[0]}"]["teacher_accuracy"]
    text = "\n".join(
        [
            "# Latency-budget search — measured",
            "",
            f"Machine: {timing['machine']['cpu']}, {timing['machine']['cores']} cores; target `cpu` (ONNX Runtime CPU, batch 1, "
            "2 threads). Teacher: the embedded resnet20-fmnist "
            f"({100 * teacher_accuracy:.2f} % on the Fashion-MNIST test split).",
            "Budget = fraction x the teacher's latency. Search space: blocks dropped (prefixes of the PRACTISE order) x "
            "fp32 / fp16 / int8; accuracy estimated without labels (expected top-1 loss against the teacher on 2048 "
            "held-back synthetic images); the labelled set is measured after the choice and never used by it.",
            "`remeasured`: after all searches, per budget one independent interleaved session "
            f"({timing['rounds']} rounds) of the teacher, the choice and the single-technique models; in brackets the "
            "20 % trimmed mean of the per-round ratios to the teacher (`pipeline.measure.paired_ratio`), which must be at most the budget fraction. `budget ms`: "
            "fraction x the teacher's median in that session. `best single`: the more accurate of `pipeline drop` "
            "(blocks alone, fp32) and `pipeline quantize --precision int8` (INT8 alone) among those within the budget "
            "in that same session.",
            "`search s`: the search stage's wall time in the first full run, budgets in the order shown in one run "
            "folder (the first measures everything; later ones reuse its cache). `cached s`: the same budget searched "
            "again with every fine-tune, export, estimate and base measurement cached (the short list is still timed "
            "afresh with the teacher in one session: that decision never mixes sessions).",
            "",
            "| budget | budget ms | chosen | remeasured ms (ratio) | meets | top-1 | best single | its top-1 | search s | cached s | short list |",
            "|---|---:|---|---:|---|---:|---|---:|---:|---:|---:|",
            *lines,
            "",
            f"Commands: {'; '.join(payload['commands'])}. Per-run records, Pareto plots and CSVs: `benchmarks/results/budget/`.",
        ]
    )
    atomic_write_text(RESULTS / "budget.md", text + "\n")
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run")
    run_parser.add_argument("--fractions", type=float, nargs="+", default=[0.9, 0.7, 0.5])
    run_parser.add_argument("--budget", default="quick")
    run_parser.add_argument("--reuse", action="store_true", help="start from the previous run's search cache")
    run_parser.add_argument(
        "--skip-baselines",
        action="store_true",
        help="keep the block-dropping records (they do not depend on the search); INT8 alone (2 min) runs again",
    )
    sub.add_parser("remeasure")
    sub.add_parser("report")
    args = parser.parse_args()
    if args.command == "run":
        run(args.fractions, args.budget, reuse=args.reuse, baselines=not args.skip_baselines)
    elif args.command == "remeasure":
        remeasure(sorted((json.loads(p.read_text())["fraction"] for p in RECORDS.glob("search-*.json")), reverse=True))
    else:
        report()


if __name__ == "__main__":
    main()
