"""Human checks on a transfer set: a PNG grid of images and how the teacher classifies them."""

import io
import math
from pathlib import Path

import numpy as np
import torch

from pipeline.fileio import atomic_write_bytes


def teacher_class_balance(logits: torch.Tensor, num_classes: int) -> dict:
    """Confidence and class spread of the teacher on the set: a collapsed synthesizer shows up here first."""
    if len(logits) == 0:
        return {}
    probabilities = torch.softmax(logits.float(), 1)
    counts = torch.bincount(probabilities.argmax(1), minlength=num_classes).float()
    share = counts / counts.sum()
    entropy = abs(float((share[share > 0] * share[share > 0].log()).sum()))  # one class: 0.0, not -0.0
    return {
        "mean_confidence": round(float(probabilities.max(1).values.mean()), 4),
        "class_entropy": round(entropy, 4),
        "max_entropy": round(math.log(num_classes), 4),
        "classes_seen": int((counts > 0).sum()),
    }


def save_preview(path: Path, pixels: torch.Tensor, columns: int = 8) -> None:
    """pixels: uint8 [N, C, H, W] (RGB or gray)."""
    from PIL import Image

    pixels = pixels[: columns * columns].numpy()
    rows = max(1, math.ceil(len(pixels) / columns))
    _, channels, height, width = pixels.shape
    grid = np.zeros((rows * height, columns * width, channels), dtype=np.uint8)
    for index, image in enumerate(pixels):
        r, c = divmod(index, columns)
        grid[r * height : (r + 1) * height, c * width : (c + 1) * width] = image.transpose(1, 2, 0)
    picture = Image.fromarray(grid[..., 0] if channels == 1 else grid[..., :3])
    if max(picture.size) < 512:  # small images are unreadable at 1:1
        scale = 512 // max(picture.size)
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
