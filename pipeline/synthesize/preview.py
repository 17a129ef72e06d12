"""Human checks on a generator: a PNG grid of samples and how the teacher classifies them."""

import math
from pathlib import Path

import numpy as np
import torch

from pipeline.fileio import atomic_write_bytes
from pipeline.preprocess import Preprocess


@torch.no_grad()
def teacher_class_balance(teacher, generator, num_classes: int, samples: int = 1024) -> dict:
    generator.eval()
    probabilities = torch.softmax(teacher(generator.sample(samples)), 1)
    counts = torch.bincount(probabilities.argmax(1), minlength=num_classes).float()
    share = counts / counts.sum()
    entropy = float(-(share[share > 0] * share[share > 0].log()).sum())
    return {"mean_confidence": float(probabilities.max(1).values.mean()), "class_entropy": entropy,
            "max_entropy": math.log(num_classes), "classes_seen": int((counts > 0).sum())}


@torch.no_grad()
def save_preview(path: Path, generator, preprocess: Preprocess, count: int = 64) -> None:
    import io

    from PIL import Image

    generator.eval()
    images = generator.sample(count, torch.Generator().manual_seed(0))
    mean = torch.tensor(preprocess.mean).view(1, -1, 1, 1)
    std = torch.tensor(preprocess.std).view(1, -1, 1, 1)
    pixels = ((images * std + mean).clamp(0, 1) * 255).byte().numpy()
    columns = 8
    rows = math.ceil(count / columns)
    _, channels, height, width = pixels.shape
    grid = np.zeros((rows * height, columns * width, channels), dtype=np.uint8)
    for index, image in enumerate(pixels):
        r, c = divmod(index, columns)
        grid[r * height:(r + 1) * height, c * width:(c + 1) * width] = image.transpose(1, 2, 0)
    picture = Image.fromarray(grid[..., 0] if channels == 1 else grid[..., :3])
    if max(picture.size) < 512:  # small images are unreadable at 1:1
        scale = 512 // max(picture.size)
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
