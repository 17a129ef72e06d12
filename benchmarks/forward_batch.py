"""Per-image cost of a no-grad PyTorch forward at 224 px against the batch (the inference chunk of
pipeline/process_memory.py): torchvision resnet50 (100 classes) and resnet34, random weights, batches 4 / 8 / 16 / 32,
20 interleaved rounds (each round times every model at every batch once, in the same order), one forward each.

    python benchmarks/forward_batch.py   # ~2 min on 2 cores -> benchmarks/results/forward_batch.{json,md}
"""

import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from datafree import commit, cpu_description  # noqa: E402

from pipeline.fileio import atomic_write_json, atomic_write_text  # noqa: E402

BATCHES = (4, 8, 16, 32)
ROUNDS = 20


def main() -> None:
    cpu, sha = cpu_description(), commit()  # before the timing: the code it ran, even if a commit lands meanwhile
    torch.manual_seed(0)
    models = {
        "resnet50-100": torchvision.models.resnet50(num_classes=100).eval(),
        "resnet34": torchvision.models.resnet34().eval(),
    }
    inputs = {batch: torch.randn(batch, 3, 224, 224) for batch in BATCHES}
    samples = {(name, batch): [] for name in models for batch in BATCHES}
    with torch.no_grad():
        for model in models.values():  # warm: the first forward at a shape pays one-off costs
            for batch in BATCHES:
                model(inputs[batch])
        for _ in range(ROUNDS):
            for name, model in models.items():
                for batch in BATCHES:
                    start = time.perf_counter()
                    model(inputs[batch])
                    samples[(name, batch)].append(1000 * (time.perf_counter() - start) / batch)
    rows = [
        {
            "model": name,
            "input_size": 224,
            "batch": batch,
            "median_ms_per_image": round(statistics.median(values), 2),
            "min_ms_per_image": round(min(values), 2),
            "rounds": ROUNDS,
            "runtime": f"torch {torch.__version__} (CPU, no grad)",
            "threads": torch.get_num_threads(),
            "commit": sha,
            "cpu": cpu,
        }
        for (name, batch), values in samples.items()
    ]
    results = ROOT / "benchmarks" / "results"
    atomic_write_json(results / "forward_batch.json", {"rows": rows, "python": platform.python_version()})
    lines = [
        "# No-grad forward cost per image against the batch, 224 px (process_memory.CHUNK_VALUES)",
        "",
        f"`python benchmarks/forward_batch.py`: {ROUNDS} interleaved rounds, one forward per model and batch a round; "
        f"torch {torch.__version__} on the CPU, {torch.get_num_threads()} threads; commit {sha}, {cpu}.",
        "",
        "| model | batch | median ms / image | min ms / image |",
        "|---|---:|---:|---:|",
        *[f"| {r['model']} | {r['batch']} | {r['median_ms_per_image']} | {r['min_ms_per_image']} |" for r in rows],
        "",
    ]
    atomic_write_text(results / "forward_batch.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
