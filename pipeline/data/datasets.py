"""A labelled evaluation set, already resized and normalised for one model's `Preprocess`."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.data import fashion_mnist
from pipeline.errors import PipelineError
from pipeline.preprocess import Preprocess

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass
class LabelledImages:
    name: str
    images: torch.Tensor  # float32 [N, C, H, W], normalised as the model expects
    labels: torch.Tensor  # int64 [N]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


def normalise(raw: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """raw: uint8 or float [N, C, H, W] in pixel units -> float32 normalised, resized to the model input."""
    x = raw.float() / preprocess.pixel_scale
    if x.shape[1] != preprocess.channels:
        if x.shape[1] == 1:
            x = x.expand(-1, preprocess.channels, -1, -1)
        elif preprocess.channels == 1:
            x = (x[:, :3] * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        else:
            raise PipelineError(f"cannot map {x.shape[1]}-channel images to a {preprocess.channels}-channel model")
    if tuple(x.shape[2:]) != (preprocess.height, preprocess.width):
        x = F.interpolate(x, size=(preprocess.height, preprocess.width), mode="bilinear", align_corners=False)
    mean = torch.tensor(preprocess.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(preprocess.std, dtype=torch.float32).view(1, -1, 1, 1)
    return ((x - mean) / std).contiguous()


VALIDATION_SPECS = {"fmnist-val", "fashion-mnist-val"}
VALIDATION_IMAGES = 10_000  # the last of the training split


def fashion_mnist_split(split: str, preprocess: Preprocess, limit: int | None = None) -> LabelledImages:
    """'train', 'test' or 'validation' (the last VALIDATION_IMAGES training images)."""
    if split == "validation":
        images, labels = fashion_mnist.load_split("train")
        images, labels = images[-VALIDATION_IMAGES:], labels[-VALIDATION_IMAGES:]
    else:
        images, labels = fashion_mnist.load_split(split)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    raw = torch.from_numpy(images.copy()).unsqueeze(1)
    return LabelledImages(
        f"fashion-mnist-{split}", normalise(raw, preprocess), torch.from_numpy(labels.copy()), fashion_mnist.CLASSES
    )


def image_folder(root: Path, preprocess: Preprocess, per_class: int | None = None) -> LabelledImages:
    """torchvision ImageFolder convention: one sub-folder per class, class index = sorted folder order."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise PipelineError(f"image folder {root} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise PipelineError(f"{root} has no class sub-folders (expected {root}/<class>/<image>.png)")
    mode = "L" if preprocess.channels == 1 else "RGB"
    tensors, labels = [], []
    for index, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for path in files[:per_class]:
            try:
                with Image.open(path) as image:
                    image = image.convert(mode).resize((preprocess.width, preprocess.height), Image.BILINEAR)
                    array = np.asarray(image, dtype=np.uint8)
            except (UnidentifiedImageError, OSError) as error:
                raise PipelineError(f"cannot read image {path}: {error}") from error
            array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
            if preprocess.channel_order == "BGR":
                array = array[::-1]
            tensors.append(torch.from_numpy(array.copy()))
            labels.append(index)
    if not tensors:
        raise PipelineError(f"{root} has class folders but no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    raw = torch.stack(tensors)
    return LabelledImages(f"folder:{root.name}", normalise(raw, preprocess), torch.tensor(labels), tuple(classes))


def load_eval_dataset(spec: str, preprocess: Preprocess, limit: int | None = None) -> LabelledImages:
    """`spec` is 'fmnist' / 'fashion-mnist' (test split), 'fmnist-val' (the last 10,000 training images: where
    choices are made; the test split is for reporting) or a path to an image folder."""
    if spec.lower() in {"fmnist", "fashion-mnist", "fashion_mnist"}:
        return fashion_mnist_split("test", preprocess, limit)
    if spec.lower() in VALIDATION_SPECS:
        return fashion_mnist_split("validation", preprocess, limit)
    dataset = image_folder(Path(spec), preprocess)
    if limit is not None and limit < len(dataset):
        # evenly spaced subset keeps every class represented
        index = torch.linspace(0, len(dataset) - 1, limit).long()
        dataset = LabelledImages(dataset.name, dataset.images[index], dataset.labels[index], dataset.classes)
    return dataset
