"""Calibration images for INT8: the synthesis stage's transfer set (data-free, `--calib synthetic`) or real,
unlabelled images (`--calib real --images DIR|fmnist-train`). Fed to onnxruntime's calibrators in batches."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.data.transfer_set import TransferSet
from pipeline.errors import PipelineError
from pipeline.preprocess import Preprocess

CALIBRATION_SOURCES = ("synthetic", "real")
# onnxruntime's histogram calibrators (entropy, percentile) keep every batch's outputs and stack them with
# np.asarray, which fails on a shorter last batch ("setting an array element with a sequence ... inhomogeneous
# shape", microsoft/onnxruntime#18792); so every calibration batch has this many images, the remainder unused
CALIBRATION_BATCH = 32


def equal_batches(count: int, batch_size: int = CALIBRATION_BATCH) -> tuple[int, int]:
    """(images per batch, images used) for `count` images cut into equal batches: the remainder of count / batch
    is left out; fewer images than one batch make one smaller batch."""
    size = max(1, min(batch_size, count))
    return size, count // size * size


@dataclass
class CalibrationImages:
    calibration: np.ndarray  # float32 NCHW, normalised as the model expects
    held_back: np.ndarray  # never used for calibration: the output error and top-1 agreement are measured here
    source: str  # "synthetic" or "real"
    description: str


def normalised(pixels: torch.Tensor, preprocess: Preprocess) -> np.ndarray:
    """uint8 pixels [N, C, H, W] -> the model's float input."""
    mean = torch.tensor(preprocess.mean).view(1, -1, 1, 1)
    std = torch.tensor(preprocess.std).view(1, -1, 1, 1)
    return ((pixels.float() / 255 - mean) / std).numpy().astype(np.float32)


def load_calibration_images(
    source: str,
    preprocess: Preprocess,
    *,
    transfer_set: Path | None = None,
    images: str | None = None,
    count: int = 512,
    held_back: int = 512,
    seed: int = 0,
) -> CalibrationImages:
    if source not in CALIBRATION_SOURCES:
        raise PipelineError(f"unknown calibration source {source!r}; choose one of {', '.join(CALIBRATION_SOURCES)}")
    generator = torch.Generator().manual_seed(seed)
    if source == "synthetic":
        if transfer_set is None:
            raise PipelineError("synthetic calibration needs the synthesis stage's transfer set")
        pool = TransferSet.load(transfer_set)
        pixels = pool.pixels[torch.randperm(len(pool), generator=generator)[: count + held_back]]
        inputs, what = normalised(pixels, preprocess), "transfer-set images"
    else:
        if not images:
            raise PipelineError("--calib real needs --images DIR (or fmnist-train): unlabelled images to calibrate on")
        inputs, what = real_images(images, preprocess, count + held_back, seed), f"real images from {images}"
    if len(inputs) < 2:
        raise PipelineError(f"need at least 2 calibration images, found {len(inputs)}")
    # never calibrate on the images the error is measured on; a small pool is split in halves
    held = min(held_back, len(inputs) // 2)
    split = min(count, len(inputs) - held)
    _, used = equal_batches(split)  # the count recorded is the count calibrated on
    return CalibrationImages(inputs[:used], inputs[split : split + held], source, f"{used} {what}")


def real_images(images: str, preprocess: Preprocess, count: int, seed: int) -> np.ndarray:
    """A shuffled sample of real images, normalised; their labels are never read."""
    from pipeline.data.datasets import fashion_mnist_split, image_folder

    if images.lower() in {"fmnist-train", "fashion-mnist-train"}:
        data = fashion_mnist_split("train", preprocess)
    else:
        data = image_folder(Path(images), preprocess)
    order = torch.randperm(len(data.images), generator=torch.Generator().manual_seed(seed))[:count]
    return data.images[order].numpy().astype(np.float32)


class BatchReader:
    """onnxruntime CalibrationDataReader over an array, in equal batches (`equal_batches`); defined lazily:
    onnxruntime is imported on use."""

    def __new__(cls, images: np.ndarray, input_name: str, batch_size: int = CALIBRATION_BATCH):
        from onnxruntime.quantization import CalibrationDataReader

        batch_size, used = equal_batches(len(images), batch_size)
        images = images[:used]

        class _Reader(CalibrationDataReader):
            def __init__(self):
                self.position = 0

            def get_next(self):
                if self.position >= len(images):
                    return None
                batch = images[self.position : self.position + batch_size]
                self.position += batch_size
                return {input_name: batch}

            def rewind(self):
                self.position = 0

        return _Reader()
