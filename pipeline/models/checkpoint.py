"""The project's own checkpoint format: weights plus everything needed to rebuild and feed the model.

A plain dict of tensors and primitives, so `torch.load(weights_only=True)` reads it safely.
"""

from pathlib import Path
from typing import Callable

import torch.nn as nn

from pipeline.fileio import atomic_torch_save
from pipeline.preprocess import Preprocess

FORMAT = "edge-pipeline/checkpoint-v1"


def save_checkpoint(
    path: Path, model: nn.Module, *, arch: str, preprocess: Preprocess, num_classes: int, metadata: dict | None = None
) -> None:
    state = {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}
    atomic_torch_save(
        {
            "format": FORMAT,
            "arch": arch,
            "num_classes": int(num_classes),
            "preprocess": preprocess.to_dict(),
            "state_dict": state,
            "metadata": metadata or {},
        },
        Path(path),
    )


def is_pipeline_checkpoint(obj) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


# Techniques that write checkpoints of their own shape register here how to read them back, so `models/` imports
# none of them (they register when imported; the recipes import every technique that writes checkpoints):
# an unpacker turns what was stored into a checkpoint with a plain state_dict (packed 1-bit weights, by the
# quantize stage); an architecture change builds the model a metadata key describes (blocks dropped, by drop).
UNPACKERS: dict[
    str, Callable[[dict], dict]
] = {}  # checkpoint key that marks the storage -> unpack(checkpoint) -> checkpoint
ARCHITECTURE_CHANGES: dict[str, tuple] = {}  # metadata key -> (change(model, value) -> model, describe(value))


def register_unpacker(marker_key: str, unpack) -> None:
    UNPACKERS[marker_key] = unpack


def register_architecture_change(metadata_key: str, change, describe=str) -> None:
    ARCHITECTURE_CHANGES[metadata_key] = (change, describe)
