"""Supervised teacher training on Fashion-MNIST, reproducible from a seed.

The reported accuracy is that of the final weights on the test split, which is never used to
choose a checkpoint or a hyper-parameter.
"""

import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.data import fashion_mnist
from pipeline.data.datasets import fashion_mnist_split, normalise
from pipeline.evaluate import accuracy_torch
from pipeline.models import create_model
from pipeline.models.checkpoint import save_checkpoint
from pipeline.preprocess import FASHION_MNIST_MEAN, FASHION_MNIST_STD, Preprocess
from pipeline.progress import log, progress_bar
from pipeline.training import seed_everything

FMNIST_PREPROCESS = Preprocess(1, 28, 28, FASHION_MNIST_MEAN, FASHION_MNIST_STD, "gray")


def random_shift_flip(batch: torch.Tensor, generator: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Per-sample random crop of a zero-padded image plus horizontal flip (standard FMNIST augmentation)."""
    n, _, h, w = batch.shape
    padded = F.pad(batch, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (torch.arange(h)[None] + dy[:, None])[:, None, :, None].expand(n, batch.shape[1], h, w + 2 * pad)
    shifted = padded.gather(2, rows)
    cols = (torch.arange(w)[None] + dx[:, None])[:, None, None, :].expand(n, batch.shape[1], h, w)
    shifted = shifted.gather(3, cols)
    flip = torch.rand(n, generator=generator) < 0.5
    shifted[flip] = shifted[flip].flip(-1)
    return shifted


def train_teacher(
    arch: str,
    out: Path,
    *,
    epochs: int,
    seed: int = 0,
    batch_size: int = 128,
    lr: float = 0.1,
    weight_decay: float = 5e-4,
    train_images: int | None = None,
) -> dict:
    generator = seed_everything(seed)
    images, labels = fashion_mnist.load_split("train")
    images, labels = images[:train_images], labels[:train_images]  # a subset only for quick checks
    x_train = normalise(torch.from_numpy(images.copy()).unsqueeze(1), FMNIST_PREPROCESS)
    y_train = torch.from_numpy(labels.copy())
    model = create_model(arch, in_channels=1, num_classes=10, image_size=28)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    steps_per_epoch = len(x_train) // batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15
    )
    start = time.monotonic()
    model.train()
    with progress_bar(f"training teacher {arch}", epochs * steps_per_epoch) as bar:
        for epoch in range(epochs):
            order = torch.randperm(len(x_train), generator=generator)
            running = 0.0
            for step in range(steps_per_epoch):
                index = order[step * batch_size : (step + 1) * batch_size]
                batch = random_shift_flip(x_train[index], generator)
                loss = F.cross_entropy(model(batch), y_train[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                running += loss.item()
                bar.advance()
            log(
                f"epoch {epoch + 1}/{epochs}: train loss {running / steps_per_epoch:.4f} "
                f"({time.monotonic() - start:.0f} s)"
            )
    model.eval()
    test = fashion_mnist_split("test", FMNIST_PREPROCESS)
    accuracy = accuracy_torch(model, test.images, test.labels)
    record = {
        "dataset": "fashion-mnist",
        "test_accuracy": accuracy,
        "test_images": len(test),
        "epochs": epochs,
        "seed": seed,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "augmentation": "random shift +-2 px, horizontal flip",
        "train_wall_s": round(time.monotonic() - start, 1),
        "cpu": platform.processor() or platform.machine(),
        "torch": str(torch.__version__),  # TorchVersion is not weights_only-loadable
        "train_images": len(x_train),
        "command": f"pipeline teacher train --arch {arch} --epochs {epochs} --seed {seed}"
        + (f" --train-images {train_images}" if train_images else ""),
    }
    save_checkpoint(out, model, arch=arch, preprocess=FMNIST_PREPROCESS, num_classes=10, metadata={"training": record})
    log(f"{arch}: test accuracy {accuracy:.4f} -> {out}")
    return record
