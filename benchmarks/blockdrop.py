"""Block dropping (PRACTISE) vs filter pruning on the embedded BN-ResNet Fashion-MNIST teacher, plus the
torchvision resnet34 per-block latency table at 224x224.

    python benchmarks/blockdrop.py synthesize                      # the shared data-free transfer set
    python benchmarks/blockdrop.py drop --reduction 0.3            # `pipeline drop`, data-free
    python benchmarks/blockdrop.py drop --reduction 0.3 --per-class 50   # few-shot: 50 real images per class
    python benchmarks/blockdrop.py filter-prune --match drop-0.3-df  # torch-pruning at that row's latency
    python benchmarks/blockdrop.py resnet34                        # latency table + the 22.1 % operating point
    python benchmarks/blockdrop.py report                          # one interleaved latency run of every model,
                                                                   # then blockdrop.{json,md,png}
Each run writes benchmarks/results/blockdrop/<name>.json (command, machine, metrics); the ONNX files stay in
runs/bench-blockdrop/. Accuracy: the exported ONNX model on the full Fashion-MNIST test split (10k).
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datafree import machine, machine_tag  # noqa: E402  (same machine record as the data-free benchmark)

from pipeline.fileio import atomic_write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUNS_JSON = RESULTS / "blockdrop"
WORK = ROOT / "runs" / "bench-blockdrop"
SHARED = WORK / "shared-transfer-set"
PRACTISE_REDUCTION = 0.221  # the paper's ResNet-34 operating point


def command() -> str:
    return " ".join(["python", "benchmarks/blockdrop.py", *sys.argv[1:]])


def write(name: str, record: dict) -> None:
    record = {
        **record,
        "name": name,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "command": command(),
    }
    atomic_write_json(RUNS_JSON / f"{name}.json", record)
    print(json.dumps({k: v for k, v in record.items() if k not in ("table", "selection")}, indent=1, default=str))


def synthesize(budget: str) -> None:
    """The default data-free transfer set (the `synthesize` stage of `pipeline drop`), shared by every row."""
    from pipeline.recipes.build import run_build
    from pipeline.recipes.options import BuildOptions

    started = time.monotonic()
    run_build(
        BuildOptions(out=SHARED, budget=budget, recipe="drop", latency_reduction=0.3, command=command()),
        until="synthesize",
    )
    write(f"synthesize-{machine_tag()}", {"wall_s": round(time.monotonic() - started, 1), "budget": budget})


def _seeded_run_folder(name: str, data_free: bool) -> Path:
    """A run folder that starts with the shared transfer set (and latency-table cache) already in place."""
    folder = WORK / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if data_free:
        if not (SHARED / "synthesize").is_dir():
            sys.exit("run `python benchmarks/blockdrop.py synthesize` first")
        shutil.copytree(SHARED / "synthesize", folder / "synthesize")
        shutil.copy(SHARED / "manifest.json", folder / "manifest.json")
    if (SHARED / "cache").is_dir():
        shutil.copytree(SHARED / "cache", folder / "cache")
    return folder


def drop(reduction: float, per_class: int, budget: str, seed: int, iterations: int | None = None) -> None:
    from pipeline.recipes.build import run_build
    from pipeline.recipes.options import BuildOptions

    data_free = per_class == 0
    name = f"drop-{reduction}-{'df' if data_free else f'real{per_class}'}{f'-it{iterations}' if iterations else ''}-s{seed}"
    folder = _seeded_run_folder(name, data_free)
    options = BuildOptions(
        out=folder,
        budget=budget,
        recipe="drop",
        latency_reduction=reduction,
        eval="fmnist",
        images=None if data_free else "fmnist-train",
        per_class=per_class,
        seed=seed,
        command=command(),
        drop_iterations=iterations,
    )
    started = time.monotonic()
    summary = run_build(options)
    wall = time.monotonic() - started
    stages = json.loads((folder / "manifest.json").read_text())["stages"]
    if not (SHARED / "cache").is_dir() and (folder / "cache").is_dir():
        shutil.copytree(folder / "cache", SHARED / "cache")  # later rows reuse the measured table
    metrics, bench = stages["drop"]["metrics"], stages["bench"]["metrics"]
    write(
        name,
        {
            "model": "resnet20-fmnist",
            "method": "block-drop",
            "real_images": metrics["real_images"],
            "requested_reduction": reduction,
            "accuracy": bench["student"]["accuracy"],
            "teacher_accuracy": bench["teacher"]["accuracy"],
            "eval_images": bench["student"]["eval_images"],
            "onnx": str(folder / "export" / "student.onnx"),
            "teacher_onnx": str(folder / "export" / "teacher.onnx"),
            "drop_stage_wall_s": stages["drop"]["wall_s"],
            "synthesize_wall_s": stages.get("synthesize", {}).get("wall_s"),
            "command_wall_s": round(wall, 1),
            "table_from_cache": metrics["table_from_cache"],
            "dropped_blocks": metrics["dropped_blocks"],
            "fused_max_abs_diff": metrics["fused_max_abs_diff"],
            "drop_stage_latency": {
                k: metrics[k] for k in ("latency_full_ms", "latency_dropped_ms", "latency_reduction")
            },
            "bench_latency_ms": {m: bench[m]["latency"]["median_ms"] for m in ("teacher", "student")},
            "finetune": metrics["finetune"],
            "budget": budget,
            "summary_rows": summary["rows"],
        },
    )


def filter_prune(match: str, budget: str, seed: int) -> None:
    """torch-pruning L1 filter pruning to the measured latency of a block-drop row, same data and fine-tune."""
    import copy

    import torch

    from pipeline.assets import resolve_teacher
    from pipeline.data import load_eval_dataset
    from pipeline.data.transfer_set import NormalisedImages, TransferSet
    from pipeline.drop.filter_prune import channel_counts, prune_to_latency
    from pipeline.export import export_onnx
    from pipeline.kd import FeatureKDSettings, feature_kd
    from pipeline.measure import LatencySettings
    from pipeline.measure.accuracy import accuracy_with_runner
    from pipeline.models.load import load_model
    from pipeline.models.teacher_view import TeacherView
    from pipeline.runtimes import OnnxRuntimeRunner
    from pipeline.synthesize.real_images import load_real_images
    from pipeline.targets import load_target
    from pipeline.training import freeze, seed_everything

    reference = json.loads((RUNS_JSON / f"{match}.json").read_text())
    name = f"filter-prune-{match}"
    seed_everything(seed)
    started = time.monotonic()
    loaded = load_model(resolve_teacher(None))
    teacher = freeze(loaded.model)
    view = TeacherView(teacher, loaded.preprocess, loaded.num_classes, torch.device("cpu"))
    real = reference["real_images"]
    if real:
        images = load_real_images("fmnist-train", view, real // loaded.num_classes, seed).images
    else:
        pool = TransferSet.load(SHARED / "synthesize" / "transfer_set.pt")  # the whole set, as the drop stage uses it
        images = NormalisedImages(pool.pixels, view.from_uint8, view.device)
    # the same latency settings and fine-tune settings the drop stage used for the matched row
    table = json.loads((Path(reference["onnx"]).parents[1] / "drop" / "latency_table.json").read_text())
    settings = LatencySettings(**table["settings"])
    fraction = 1 - reference["drop_stage_latency"]["latency_reduction"]
    pruned, search = prune_to_latency(teacher, loaded.preprocess, fraction, settings)
    recovery = FeatureKDSettings(iterations=reference["finetune"]["iterations"])
    work = WORK / name
    work.mkdir(parents=True, exist_ok=True)
    finetune = feature_kd(
        pruned, copy.deepcopy(teacher), images, recovery, work, seed, label="fine-tune (filter-pruned)"
    )
    wall = time.monotonic() - started
    onnx_path = work / "pruned.onnx"
    export_onnx(pruned.eval(), loaded.preprocess, onnx_path)
    data = load_eval_dataset("fmnist", loaded.preprocess)
    with OnnxRuntimeRunner(onnx_path, threads=load_target("cpu").threads) as runner:
        accuracy = accuracy_with_runner(runner, data.images, data.labels)
    write(
        name,
        {
            "model": "resnet20-fmnist",
            "method": "filter-prune",
            "real_images": real,
            "matched_to": match,
            "accuracy": accuracy,
            "eval_images": len(data),
            "onnx": str(onnx_path),
            "wall_s": round(wall, 1),
            "pruning_ratio": search["ratio"],
            "reached_matched_latency": search["reached"],
            "search": search["trace"],
            "channels": channel_counts(pruned),
            "finetune": finetune,
            "fused_max_abs_diff": None,
            "budget": budget,
        },
    )


def resnet34(threads: int, rounds: int, adapter_steps: int) -> None:
    """Per-block latency table of torchvision resnet34 at 224x224 (random weights: latency does not depend on
    them), and the blocks our selection drops at PRACTISE's 22.1 % operating point, with their measured latency.
    With random weights the recoverability term carries no information about accuracy; it is computed as in a
    real run (on Gaussian-noise images, a few adapter steps) only so that the same code path picks the blocks."""
    import torch

    from pipeline.drop.blocks import droppable_blocks
    from pipeline.drop.latency_table import block_latency_table, cache_key, format_table, time_candidate_sets
    from pipeline.drop.recoverability import RecoverabilityProbe, RecoverabilitySettings
    from pipeline.drop.select import LatencyBudget, greedy_drop
    from pipeline.measure import LatencySettings
    from pipeline.models import create_model
    from pipeline.preprocess import default_preprocess

    torch.manual_seed(0)
    model = create_model("resnet34").eval()
    preprocess = default_preprocess(3, 224, 224)
    settings = LatencySettings(threads=threads, warmup=5, runs=50, rounds=rounds, max_seconds=1.5)
    started = time.monotonic()
    blocks = droppable_blocks(model)
    table = block_latency_table(
        model, preprocess, blocks, settings, cache_key("resnet34", "cpu", settings, (3, 224, 224))
    )
    table_s = time.monotonic() - started
    print(format_table(table))
    probe = RecoverabilityProbe(
        model,
        torch.randn(48, 3, 224, 224),
        (3, 224, 224),
        RecoverabilitySettings(steps=adapter_steps, batch_size=4, train_images=32, eval_images=16),
    )

    def measure(dropped, candidates):
        return time_candidate_sets(model, model, dropped, candidates, preprocess, settings)

    selection = greedy_drop(table, LatencyBudget(reduction=PRACTISE_REDUCTION), probe, measure)
    last = selection["verifications"][-1]
    write(
        f"resnet34-224-{machine_tag()}",
        {
            "model": "resnet34-224 (random weights)",
            "threads": threads,
            "table_s": round(table_s, 1),
            "wall_s": round(time.monotonic() - started, 1),
            "table": table,
            "selection": selection,
            "operating_point": {
                "requested_reduction": PRACTISE_REDUCTION,
                "dropped_blocks": selection["dropped"],
                "full_ms": last["full_ms"],
                "dropped_ms": last["dropped_ms"],
                "measured_reduction": last["measured_reduction"],
            },
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("synthesize")
    p.add_argument("--budget", default="quick")
    p = sub.add_parser("drop")
    p.add_argument("--reduction", type=float, required=True)
    p.add_argument("--per-class", type=int, default=0, help="0: data-free")
    p.add_argument("--budget", default="quick")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iterations", type=int, help="recovery fine-tune iterations (default: the budget's)")
    p = sub.add_parser("filter-prune")
    p.add_argument("--match", required=True, help="name of a block-drop row to match in latency")
    p.add_argument("--budget", default="quick")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("resnet34")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--adapter-steps", type=int, default=3)
    p = sub.add_parser("report")
    p.add_argument("--rounds", type=int, default=30, help="interleaved latency rounds (more: less noise)")
    args = parser.parse_args()
    if args.mode == "synthesize":
        synthesize(args.budget)
    elif args.mode == "drop":
        drop(args.reduction, args.per_class, args.budget, args.seed, args.iterations)
    elif args.mode == "filter-prune":
        filter_prune(args.match, args.budget, args.seed)
    elif args.mode == "resnet34":
        resnet34(args.threads, args.rounds, args.adapter_steps)
    else:
        from blockdrop_report import report

        report(rounds=args.rounds)


if __name__ == "__main__":
    main()
