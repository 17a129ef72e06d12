"""Data-free student training against the published anchors (issue 4).

Each measurement is one sub-command writing one JSON file under benchmarks/results/datafree/, so runs can
be done one by one (and resumed); `report` aggregates them into datafree.json / datafree.md / datafree.png.

    python benchmarks/datafree.py teacher --pair lenet
    python benchmarks/datafree.py ceiling --pair lenet --seed 0 --epochs 20
    python benchmarks/datafree.py method  --pair lenet --method bn-inversion --seed 0 --budget quick
    python benchmarks/datafree.py report

Pairs: lenet = embedded LeNet-5 -> lenet5-half; resnet = embedded ResNet-20 -> resnet14. A `method` run is the
product itself: `pipeline build --synthesizer M --budget B` (synthesize + distill + export + bench); its
accuracy is that of the exported final student on the full Fashion-MNIST test split (10k images), never a
best checkpoint; wall_s is the synthesize + distill wall time (the data-free training).
"""

import argparse
import functools
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUNS = RESULTS / "datafree"
PAIRS = {
    "lenet": ("lenet5-fmnist", "lenet5-half"),
    "resnet": ("resnet20-fmnist", "resnet14"),
    # issue 22 item 9: the torchvision resnet18 that benchmarks/scale.py trains with `pipeline teacher train`
    "tvresnet18": ("runs/bench-scale/teachers/resnet18-fmnist.pt", "resnet14"),
}


def teacher_reference(name: str) -> str:
    """An embedded teacher's name, or a checkpoint file under the repository."""
    return str(ROOT / name) if name.endswith(".pt") else f"embedded:{name}"


# Published Fashion-MNIST / MNIST anchors (../shared/docs/METHODS.md section 1).
ANCHORS = [
    {
        "paper": "ZSKD (Nayak et al. 2019)",
        "dataset": "Fashion-MNIST",
        "teacher": 0.9084,
        "kd_real": 0.8966,
        "data_free": 0.7962,
    },
    {"paper": "DAFL (Chen et al. 2019)", "dataset": "MNIST", "teacher": 0.9891, "kd_real": 0.9891, "data_free": 0.9820},
]
# the current default for BN teachers, spelt out so the rows mean the same when defaults change
BN_INVERSION_DEFAULT = ["--augment", "--kd-steps", "8", "--synth-option", "jitter=2"]
METHOD_ROWS = {  # row name -> (synthesizer, extra CLI arguments, real images used)
    "bn-inversion+jitter+kd8": ("bn-inversion", BN_INVERSION_DEFAULT, 0),
    "bn-inversion": ("bn-inversion", ["--no-augment"], 0),
    "bn-inversion+augment": ("bn-inversion", ["--augment"], 0),
    "dafl": ("dafl", ["--no-augment"], 0),
    "dafl-paper": ("dafl", ["--synth-preset", "paper", "--no-augment"], 0),
    "soft-target": ("soft-target", ["--no-augment"], 0),
    "noise": ("noise", ["--no-augment"], 0),
    # mixing: the default synthesizer plus 10 real training images per class in its transfer set
    "bn-inversion+mix-10-per-class": (
        "bn-inversion",
        [*BN_INVERSION_DEFAULT, "--mix-images", "fmnist-train", "--mix-per-class", "10"],
        100,
    ),
    "images-10-per-class": (
        "images",
        ["--synth-option", "path=fmnist-train", "--synth-option", "per_class=10", "--no-augment"],
        100,
    ),
}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def machine() -> dict:
    # torch uses one thread per core unless OMP_NUM_THREADS says otherwise
    threads = int(os.environ.get("OMP_NUM_THREADS", "0")) or os.cpu_count()
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": threads,
        "gpu": None,
        "platform": platform.platform(),
    }


@functools.cache
def commit() -> str:
    """The checkout's short commit, recorded on every results row. Read once per process, and scripts call it as
    they start: a long run's row names the code it started with, not a commit made meanwhile."""
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return done.stdout.strip()


def cpu_description() -> str:
    """The CPU name with its family, model and INT8 features (several CPUs share a name across sessions)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    features = (
        ", ".join(name for flag, name in (("avx512_vnni", "AVX-512 VNNI"), ("amx_int8", "AMX")) if flag in flags)
        or "no VNNI, no AMX"
    )
    return (
        f"{cpu_name()} (family {fields.get('cpu family', '?')} model {fields.get('model', '?')}: {features}), "
        f"{os.cpu_count()} cores"
    )


def machine_tag() -> str:
    """Part of a run's file name, so that the same row measured on another CPU or thread count is kept beside
    the earlier one instead of replacing it (machines differ between sessions)."""
    here = machine()
    words = re.sub(r"\(r\)|\(tm\)|processor|cpu", " ", here["cpu"].lower())
    return "-".join(re.findall(r"[a-z0-9]+", words)[:2]) + f"-{here['threads']}t"


def write(name: str, record: dict) -> None:
    from pipeline.fileio import atomic_write_json

    here = machine()
    record = {
        **record,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": here,
        "cpu": here["cpu"],
        "commit": commit(),
        "command": " ".join(["python", "benchmarks/datafree.py", *sys.argv[1:]]),
    }
    atomic_write_json(RUNS / f"{name}.json", record)
    print(json.dumps({k: v for k, v in record.items() if k != "curve"}, indent=1))


def teacher_accuracy(pair: str) -> None:

    from pipeline.assets import resolve_teacher
    from pipeline.data.datasets import fashion_mnist_split
    from pipeline.evaluate import accuracy_torch
    from pipeline.models.load import load_model

    loaded = load_model(resolve_teacher(teacher_reference(PAIRS[pair][0])))
    test = fashion_mnist_split("test", loaded.preprocess)
    write(
        f"{pair}-teacher",
        {
            "pair": pair,
            "teacher": PAIRS[pair][0],
            "student": None,
            "method": "teacher",
            "real_images": 60000,
            "seed": 0,
            "accuracy": accuracy_torch(loaded.model, test.images, test.labels),
            "wall_s": None,
        },
    )


def kd_real_ceiling(pair: str, seed: int, epochs: int, batch_size: int, lr: float, temperature: float) -> None:
    """The ceiling: the same student, KD from the same teacher on all 60k real training images, to convergence."""
    import torch

    from pipeline.assets import resolve_teacher
    from pipeline.data.datasets import fashion_mnist_split
    from pipeline.evaluate import accuracy_torch
    from pipeline.kd import kd_loss, random_shift
    from pipeline.models import create_model
    from pipeline.models.load import load_model

    torch.manual_seed(seed)
    teacher_name, student_name = PAIRS[pair]
    loaded = load_model(resolve_teacher(teacher_reference(teacher_name)))
    train, test = fashion_mnist_split("train", loaded.preprocess), fashion_mnist_split("test", loaded.preprocess)
    start = time.monotonic()
    teacher = loaded.model.eval()
    student = create_model(student_name, in_channels=1, num_classes=10, image_size=28)
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    steps_per_epoch = len(train) // batch_size
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        student.train()
        order = torch.randperm(len(train), generator=generator)
        for step in range(steps_per_epoch):
            index = order[step * batch_size : (step + 1) * batch_size]
            # shift augmentation changes the image, so the teacher labels the shifted image
            images = random_shift(train.images[index], 2, generator)
            with torch.no_grad():
                targets = teacher(images)
            loss = kd_loss(student(images), targets, temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        print(f"epoch {epoch + 1}/{epochs} loss {loss.item():.4f} {time.monotonic() - start:.0f} s", flush=True)
    write(
        f"{pair}-kd-real-s{seed}",
        {
            "pair": pair,
            "teacher": teacher_name,
            "student": student_name,
            "method": "kd-real",
            "real_images": len(train),
            "seed": seed,
            "accuracy": accuracy_torch(student, test.images, test.labels),
            "wall_s": round(time.monotonic() - start, 1),
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "temperature": temperature,
        },
    )


def method_run(pair: str, row: str, seed: int, budget: str, extra: list[str]) -> None:
    """The product end to end: `pipeline build` with one synthesizer; accuracy of the exported final student."""
    teacher_name, student_name = PAIRS[pair]
    synthesizer, arguments, real_images = METHOD_ROWS[row]
    name = f"{pair}-{row}-{budget}-s{seed}-{machine_tag()}"
    out = ROOT / "runs" / "bench-datafree" / name
    command = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "build",
        "--teacher",
        teacher_reference(teacher_name),
        "--student",
        student_name,
        "--synthesizer",
        synthesizer,
        *arguments,
        *extra,
        "--budget",
        budget,
        "--seed",
        str(seed),
        "--eval",
        "fmnist",
        "--out",
        str(out),
        "--json",
        "--quiet",
    ]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"pipeline build failed: {result.stderr.strip().splitlines()[-1:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    stages = manifest["stages"]
    student = stages["bench"]["metrics"]["student"]
    distill = stages["distill"]["metrics"]
    write(
        name,
        {
            "pair": pair,
            "teacher": teacher_name,
            "student": student_name,
            "method": row,
            "budget": budget,
            "real_images": real_images,
            "seed": seed,
            "accuracy": student["accuracy"],
            "eval_images": student["eval_images"],
            "wall_s": round(stages["synthesize"]["wall_s"] + stages["distill"]["wall_s"], 1),
            "build_wall_s": round(time.monotonic() - started, 1),
            "pipeline_command": manifest.get("command"),
            "student_steps": distill.get("student_steps"),
            "transfer_images": distill["transfer_set"]["images_added"],
            "curve": distill.get("accuracy_curve", []),
            "synthetic_top1_agreement": distill.get("synthetic_top1_agreement"),
            # the settings the run actually used, defaults included (defaults change between versions)
            "training": stages["distill"]["config"]["training"],
            "synthesizer_options": stages["synthesize"]["config"]["options"],
            "seconds": {
                "synthesize": stages["synthesize"]["config"]["seconds"],
                "distill": stages["distill"]["config"]["seconds"],
            },
        },
    )


def main() -> None:
    commit()  # read as the run starts (rows are written when it ends)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("teacher")
    p.add_argument("--pair", choices=PAIRS, required=True)
    p = commands.add_parser("ceiling")
    p.add_argument("--pair", choices=PAIRS, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--temperature", type=float, default=4.0)
    p = commands.add_parser("method")
    p.add_argument("--pair", choices=PAIRS, required=True)
    p.add_argument("--method", choices=METHOD_ROWS, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", default="quick")
    p.add_argument("extra", nargs="*", help="more `pipeline build` arguments, after --")
    commands.add_parser("report")
    args = parser.parse_args()
    if args.command == "teacher":
        teacher_accuracy(args.pair)
    elif args.command == "ceiling":
        kd_real_ceiling(args.pair, args.seed, args.epochs, args.batch_size, args.lr, args.temperature)
    elif args.command == "method":
        method_run(args.pair, args.method, args.seed, args.budget, args.extra)
    else:
        sys.path.insert(0, str(ROOT))
        from benchmarks.datafree_report import report

        report(RUNS, RESULTS, ANCHORS)


if __name__ == "__main__":
    main()
