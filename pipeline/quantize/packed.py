"""The packed 1-bit checkpoint: an edge-pipeline checkpoint whose binarised weights are stored as sign bits
plus one alpha per output channel (32x smaller than fp32 for those layers). `pipeline.models.load` reads it
like any checkpoint (`unpack_checkpoint`), rebuilding alpha * sign(W) bit-exactly."""

from pathlib import Path

import torch.nn as nn

from pipeline.errors import PipelineError
from pipeline.fileio import atomic_torch_save
from pipeline.models.checkpoint import FORMAT, register_unpacker
from pipeline.preprocess import Preprocess
from pipeline.quantize.binary import PACKED_KEY, is_binary, packed_state, unpacked_state


def save_binary_checkpoint(
    path: Path,
    model: nn.Module,
    layers: list[str],
    *,
    arch: str,
    preprocess: Preprocess,
    num_classes: int,
    metadata: dict | None = None,
) -> dict:
    """Write `model` (materialised: binarised layers hold alpha * sign(W)) with those layers packed."""
    state = {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}
    for layer in layers:
        if not is_binary(state[f"{layer}.weight"]):
            raise PipelineError(f"layer {layer} is not binary (one magnitude per output channel); cannot pack it")
    rest, packed = packed_state(state, layers)
    atomic_torch_save(
        {
            "format": FORMAT,
            "arch": arch,
            "num_classes": int(num_classes),
            "preprocess": preprocess.to_dict(),
            "state_dict": rest,
            PACKED_KEY: packed,
            "metadata": {**(metadata or {}), "binarised_layers": list(layers)},
        },
        Path(path),
    )
    return packed


def unpack_checkpoint(checkpoint: dict) -> dict:
    """A checkpoint with packed binary weights -> the same checkpoint with a plain state_dict."""
    packed = checkpoint.get(PACKED_KEY)
    if not packed:
        return checkpoint
    try:
        state = unpacked_state(checkpoint["state_dict"], packed)
    except (KeyError, TypeError, ValueError) as error:
        raise PipelineError(f"damaged packed binary weights: {error}") from None
    return {**{k: v for k, v in checkpoint.items() if k != PACKED_KEY}, "state_dict": state}


register_unpacker(PACKED_KEY, unpack_checkpoint)  # the loader reads packed 1-bit weights through this
