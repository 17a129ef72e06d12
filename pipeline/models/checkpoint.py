"""The project's own checkpoint format: weights plus everything needed to rebuild and feed the model.

A plain dict of tensors and primitives, so `torch.load(weights_only=True)` reads it safely.
"""

from pathlib import Path

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
