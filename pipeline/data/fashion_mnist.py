"""Fashion-MNIST from the IDX files of Debian's `dataset-fashion-mnist` (or $FASHION_MNIST_DIR)."""

import gzip
import os
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def dataset_dir() -> Path:
    return Path(os.environ.get("FASHION_MNIST_DIR", DEBIAN_DIR))


def is_available() -> bool:
    return all((dataset_dir() / name).exists() for pair in _FILES.values() for name in pair)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    if int.from_bytes(data[:4], "big") != magic:
        raise PipelineError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 [N, 28, 28], labels int64 [N]) for 'train' or 'test'."""
    if not is_available():
        raise PipelineError(
            f"Fashion-MNIST not found in {dataset_dir()}",
            hint="install it with `apt-get install dataset-fashion-mnist` or set FASHION_MNIST_DIR",
        )
    images_name, labels_name = _FILES[split]
    images = _read_idx(dataset_dir() / images_name, 0x00000803)
    labels = _read_idx(dataset_dir() / labels_name, 0x00000801).astype(np.int64)
    return images, labels
