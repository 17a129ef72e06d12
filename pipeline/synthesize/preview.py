"""Human checks on a generator: a PNG grid of samples and how the teacher classifies them."""

import math
from pathlib import Path

import numpy as np
import torch

from pipeline.fileio import atomic_write_bytes
from pipeline.preprocess import Preprocess


def diagnostic_sample_count(image_size: int) -> int:
    """Enough samples for a stable estimate on small images, without minutes of CPU time on 224 px ones."""
    return 1024 if image_size <= 64 else 128


@torch.no_grad()
def chunked_sample_logits(models, generator, samples: int, chunk: int = 64, seed: int | None = None):
    """Generator samples through each model in chunks (memory stays bounded at any image size)."""
    rng = torch.Generator().manual_seed(seed) if seed is not None else None
    outputs = [[] for _ in models]
    for start in range(0, samples, chunk):
        images = generator.sample(min(chunk, samples - start), rng)
        for collected, model in zip(outputs, models):
            collected.append(model(images))
    return [torch.cat(collected) for collected in outputs]


@torch.no_grad()
def teacher_class_balance(teacher, generator, num_classes: int) -> dict:
    generator.eval()
    (logits,) = chunked_sample_logits([teacher], generator, diagnostic_sample_count(generator.image_size))
    probabilities = torch.softmax(logits, 1)
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
