"""The transfer set: synthetic (or few real) images with the teacher's logits, shared by later stages.

Images are stored as uint8 pixels (what a camera could produce; 1 byte per value), logits as float16.
Logits are always computed by the teacher on the stored, quantised pixels, so the student is trained
on exactly what is saved and `drop`/`quantize` can reuse the file without re-running the teacher.
The pool has a capacity; once full, new images replace random old ones (a reservoir of recent work).
"""

from pathlib import Path

import torch

from pipeline.errors import PipelineError
from pipeline.fileio import atomic_torch_save

TRANSFER_SET_FORMAT = "edge-pipeline/transfer-set-v1"


class TransferSet:
    def __init__(self, shape: tuple[int, int, int], num_classes: int, capacity: int):
        self.shape, self.num_classes, self.capacity = tuple(shape), num_classes, capacity
        self.pixels = torch.empty((0, *shape), dtype=torch.uint8)
        self.logits = torch.empty((0, num_classes), dtype=torch.float16)
        self.sources = torch.empty((0,), dtype=torch.uint8)  # 0 synthetic, 1 real
        self.added = 0  # images ever added (the pool may hold fewer)
        self._classes = None  # teacher_classes(), until the pool changes

    def __len__(self) -> int:
        return len(self.pixels)

    def add(
        self, pixels: torch.Tensor, logits: torch.Tensor, real: bool = False, rng: torch.Generator | None = None
    ) -> None:
        """pixels: uint8 [B, C, H, W]; logits: the teacher's on exactly these pixels."""
        pixels, logits = pixels.cpu(), logits.detach().cpu().to(torch.float16)
        sources = torch.full((len(pixels),), int(real), dtype=torch.uint8)
        self.added += len(pixels)
        self._classes = None
        room = self.capacity - len(self)
        if room > 0:
            take = min(room, len(pixels))
            self.pixels = torch.cat([self.pixels, pixels[:take]])
            self.logits = torch.cat([self.logits, logits[:take]])
            self.sources = torch.cat([self.sources, sources[:take]])
            pixels, logits, sources = pixels[take:], logits[take:], sources[take:]
        if len(pixels):
            slots = torch.randperm(len(self), generator=rng)[: len(pixels)]
            self.pixels[slots], self.logits[slots], self.sources[slots] = pixels, logits, sources

    def batch(
        self, size: int, rng: torch.Generator | None = None, class_balance: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`size` images drawn with replacement, uniformly or (`class_balance` X > 0) each weighted by
        1 / (images of its teacher class) ** X, so a pool skewed to a few classes still trains on the others."""
        if class_balance > 0:
            classes = self.teacher_classes()
            counts = torch.bincount(classes, minlength=self.num_classes).clamp_min(1).double()
            weights = counts.pow(-class_balance)[classes]
            index = torch.multinomial(weights, size, replacement=True, generator=rng)
        else:
            index = torch.randint(len(self), (size,), generator=rng)
        return self.pixels[index], self.logits[index].float()

    def teacher_classes(self) -> torch.Tensor:
        """Each image's teacher class (the argmax of its logits), kept until the pool changes: a class-balanced
        batch needs it at every student step, and over a full pool the argmax costs ten times the draw."""
        if self._classes is None:
            self._classes = self.logits.argmax(1)
        return self._classes

    def state_dict(self) -> dict:
        return {
            "format": TRANSFER_SET_FORMAT,
            "shape": list(self.shape),
            "num_classes": self.num_classes,
            "capacity": self.capacity,
            "pixels": self.pixels,
            "logits": self.logits,
            "sources": self.sources,
            "added": self.added,
        }

    def load_state_dict(self, state: dict) -> None:
        self.pixels, self.logits, self.sources = state["pixels"], state["logits"], state["sources"]
        self._classes = None
        self.added = state["added"]

    def save(self, path: Path, **metadata) -> None:
        atomic_torch_save({**self.state_dict(), "metadata": metadata}, path)

    @classmethod
    def load(cls, path: Path, capacity: int | None = None) -> "TransferSet":
        try:
            state = torch.load(path, weights_only=True)
        except Exception as error:
            raise PipelineError(f"{path} is not a readable transfer set ({type(error).__name__})") from None
        if not isinstance(state, dict) or state.get("format") != TRANSFER_SET_FORMAT:
            raise PipelineError(f"{path} is not an edge-pipeline transfer set")
        pool = cls(tuple(state["shape"]), state["num_classes"], capacity or state["capacity"])
        pool.load_state_dict(state)
        if len(pool) > pool.capacity:
            pool.pixels, pool.logits, pool.sources = (
                t[-pool.capacity :] for t in (pool.pixels, pool.logits, pool.sources)
            )
        return pool

    def summary(self) -> dict:
        counts = torch.bincount(self.teacher_classes(), minlength=self.num_classes) if len(self) else None
        return {
            "images": len(self),
            "images_added": self.added,
            "real_images": int(self.sources.sum()),
            "bytes": self.pixels.numel() + 2 * self.logits.numel(),
            "teacher_class_counts": counts.tolist() if counts is not None else [],
        }


def default_capacity(shape: tuple[int, int, int], max_bytes: int = 256 * 2**20, max_images: int = 100_000) -> int:
    """100k images for small inputs; fewer for large ones so the pool stays ~256 MB in memory and on disk."""
    return max(256, min(max_images, max_bytes // (shape[0] * shape[1] * shape[2])))


class NormalisedImages:
    """Transfer-set pixels (uint8) that index like a tensor of model inputs: each lookup is converted on the
    fly, so a stage can draw from the whole pool without holding it as float32 (4x the bytes; 20k RGB
    224x224 images would be 12 GB)."""

    def __init__(self, pixels: torch.Tensor, to_input, device: torch.device):
        self.pixels, self.to_input, self.device = pixels, to_input, device

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index) -> torch.Tensor:
        return self.to_input(self.pixels[index]).to(self.device)

    def subset(self, index) -> "NormalisedImages":
        """Some of the images, still uint8 until they are looked up."""
        return NormalisedImages(self.pixels[index], self.to_input, self.device)


def take(images, index):
    """`images[index]` that stays lazy for NormalisedImages (a probe's 1,024 images at 224 px are 0.6 GB as floats)."""
    return images.subset(index) if isinstance(images, NormalisedImages) else images[index]
