"""Ablation behind the binary-weights layer choice (issue 6): LeNet-5 binary-weight recipes, each trained by the
quantize stage's data-free KD (`pipeline.kd.feature_kd`) on a synthesis stage's transfer set, judged on the LAST 10,000
Fashion-MNIST *training* images (labels used for this judgement only; never the test split, which the benchmark
reports once for the recipe chosen here). Deterministic: the same recipe gives the same figures.

    python benchmarks/experiments/binary_recipes.py TRANSFER_SET NAME '{"lr": 0.005}'
    python benchmarks/experiments/binary_recipes.py TRANSFER_SET keep_conv2 '{"layers": ["features.8", "classifier.0"]}'

Extra keys besides FeatureKDSettings fields: layers (binarise these instead of all but first and last), adam (Adam
instead of SGD), reest_after (re-estimate BatchNorm statistics after KD). Appends one JSON line to
benchmarks/results/experiments/lenet5-binary-recipes.jsonl."""

import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from pipeline.data.datasets import fashion_mnist_split
from pipeline.data.transfer_set import NormalisedImages, TransferSet
from pipeline.kd import FeatureKDSettings, feature_kd
from pipeline.models.load import load_model
from pipeline.quantize import binary
from pipeline.quantize.calibration import normalised

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "experiments" / "lenet5-binary-recipes.jsonl"


@torch.no_grad()
def accuracy(model, images, labels) -> float:
    model.eval()
    return float(
        sum((model(images[i : i + 1000]).argmax(1) == labels[i : i + 1000]).sum() for i in range(0, len(images), 1000))
        / len(images)
    )


def main() -> None:
    torch.set_num_threads(2)
    transfer_set, name = Path(sys.argv[1]), sys.argv[2]
    recipe = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    overrides = dict(recipe)
    layers = overrides.pop("layers", None)
    reestimate_after = overrides.pop("reest_after", False)
    if overrides.pop("adam", False):
        torch.optim.SGD = lambda groups, lr, momentum: torch.optim.Adam(groups, lr=lr)
    loaded = load_model(ROOT / "pipeline" / "assets" / "teachers" / "lenet5-fmnist.pt")
    teacher, preprocess = loaded.model.eval(), loaded.preprocess
    pool = TransferSet.load(transfer_set)
    data = NormalisedImages(
        pool.pixels, lambda pixels: torch.from_numpy(normalised(pixels, preprocess)), torch.device("cpu")
    )
    held_out = fashion_mnist_split("train", preprocess)
    images, labels = held_out.images[-10000:], held_out.labels[-10000:]

    layers = layers or binary.binarisable_layers(teacher)
    student = binary.binarise(copy.deepcopy(teacher), layers)
    binary.reestimate_batchnorm(student, data, seed=0)
    after_batchnorm = accuracy(student, images, labels)
    started = time.time()
    with tempfile.TemporaryDirectory() as scratch:
        training = feature_kd(
            student,
            teacher,
            data,
            FeatureKDSettings(**{"iterations": 3000, **overrides}),
            Path(scratch) / "kd",
            0,
            label=name,
        )
    student = binary.materialise(student).eval()
    before_reestimate = accuracy(student, images, labels)
    if reestimate_after:
        binary.reestimate_batchnorm(student, data, seed=1)
    row = {
        "name": name,
        "recipe": recipe,
        "layers": layers,
        "val_teacher": accuracy(teacher, images, labels),
        "val_after_bn": after_batchnorm,
        "val_before_reest": before_reestimate,
        "val_binary": accuracy(student, images, labels),
        "train_s": round(time.time() - started, 1),
        "final_loss": training["final_loss"],
        "transfer_set": transfer_set.name,
    }
    print(json.dumps(row))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a") as out:
        out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
