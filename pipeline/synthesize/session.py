"""Setting up a data-free session, for the synthesize stage and for distill, which continues it: the frozen
teacher on its device, the real images mixed in (if any), one seed per torchrun rank, and the ranks' pools
merged at the end."""

from pathlib import Path

import torch

from pipeline import distributed
from pipeline.data.transfer_set import TransferSet
from pipeline.models.teacher_view import TeacherView
from pipeline.synthesize.base import create_synthesizer
from pipeline.teacher_spec import TeacherSpec
from pipeline.training import freeze


def mix_synthesizer(view: TeacherView, options: dict | None, seed: int):
    return create_synthesizer("images", view, options, seed) if options else None


def teacher_view(spec: TeacherSpec, path: Path, device_name: str) -> TeacherView:
    device = distributed.local_device(device_name)
    distributed.init(device)
    loaded = spec.load(path)
    return TeacherView(freeze(loaded.model.to(device)), loaded.preprocess, loaded.num_classes, device)


def rank_seed(seed: int) -> int:
    """Each torchrun rank synthesises different images."""
    return seed + 1000 * distributed.rank()


def merge_rank_pools(pool: TransferSet) -> TransferSet:
    """Under torchrun, rank 0 keeps the union of every rank's images (up to capacity)."""
    if not distributed.active():
        return pool
    parts = distributed.gather_objects((pool.pixels, pool.logits, pool.sources, pool.added))
    merged = TransferSet(pool.shape, pool.num_classes, pool.capacity)
    for pixels, logits, sources, _ in parts:
        merged.pixels, merged.logits, merged.sources = (
            torch.cat([a, b]) for a, b in zip((merged.pixels, merged.logits, merged.sources), (pixels, logits, sources))
        )
    merged.pixels, merged.logits, merged.sources = (
        t[: pool.capacity] for t in (merged.pixels, merged.logits, merged.sources)
    )
    merged.added = sum(part[3] for part in parts)
    return merged
