"""The block graph: which residual blocks of a model can be dropped, and the model without them.

A block is droppable when its shortcut carries the block's output shape on its own:
  * identity shortcut (ResNet blocks without `downsample`, MobileNetV2 inverted residuals with stride 1
    and equal channels): the block becomes the identity. For ResNets that is exact, not approximate:
    the block input is already post-ReLU, so relu(x) = x;
  * projection shortcut (ResNet blocks with a 1x1 `downsample`): the body goes, the projection stays,
    followed by the block's final ReLU.
Anything else (plain downsampling layers, MobileNet blocks that change shape) is not droppable.
"""

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
import torchvision

from pipeline.errors import PipelineError
from pipeline.models import cifar_resnet
from pipeline.models.checkpoint import register_architecture_change


@dataclass(frozen=True)
class Block:
    name: str  # module path, e.g. "layer2.1" or "features.5"
    kind: str  # "identity" or "projection": what is left when the body goes
    body_convs: int  # convolutions removed with the block


class ProjectionShortcut(nn.Module):
    """What is left of a ResNet block with a 1x1 projection shortcut once its body is dropped."""

    def __init__(self, shortcut: nn.Module):
        super().__init__()
        self.shortcut = shortcut  # not named `downsample`: adapters may sit on this conv (see adapters.py)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.shortcut(x))


class DroppedBlock(nn.Identity):
    """Marks where an identity-shortcut block was (an nn.Identity; the marker helps find the gap)."""


_RESNET_BLOCKS = (cifar_resnet.BasicBlock, torchvision.models.resnet.BasicBlock, torchvision.models.resnet.Bottleneck)
_INVERTED_RESIDUAL = torchvision.models.mobilenetv2.InvertedResidual


def _body_convs(block: nn.Module) -> int:
    shortcut = getattr(block, "downsample", None)
    in_shortcut = {id(m) for m in shortcut.modules()} if shortcut is not None else set()
    return sum(1 for m in block.modules() if isinstance(m, nn.Conv2d) and id(m) not in in_shortcut)


def droppable_blocks(model: nn.Module) -> list[Block]:
    """Droppable residual blocks in forward order (module registration order = forward order in the registry)."""
    blocks = []
    for name, module in model.named_modules():
        if isinstance(module, _RESNET_BLOCKS):
            kind = "identity" if module.downsample is None else "projection"
            blocks.append(Block(name, kind, _body_convs(module)))
        elif isinstance(module, _INVERTED_RESIDUAL) and module.use_res_connect:
            blocks.append(Block(name, "identity", _body_convs(module)))
    return blocks


def require_blocks(model: nn.Module, label: str) -> list[Block]:
    blocks = droppable_blocks(model)
    if not blocks:
        raise PipelineError(
            f"{label} has no droppable residual blocks (block dropping needs a ResNet or "
            "MobileNetV2 from the registry; see `pipeline models`)"
        )
    return blocks


def require_block_names(model: nn.Module, names, label: str) -> None:
    """`--drop-blocks` names must be droppable blocks of the model; say which ones are."""
    available = [block.name for block in require_blocks(model, label)]
    unknown = [name for name in names if name not in available]
    if unknown:
        raise PipelineError(
            f"--drop-blocks: {', '.join(unknown)} is not a droppable block of {label}; "
            f"choose from {', '.join(available)}"
        )


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path = name.split(".")
    parent = model.get_submodule(".".join(path[:-1])) if len(path) > 1 else model
    return parent, path[-1]


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, child = _parent(model, name)
    if isinstance(parent, nn.Sequential) and child.isdigit():
        parent[int(child)] = new
    else:
        setattr(parent, child, new)


def without_blocks(model: nn.Module, names, *, copy_model: bool = True) -> nn.Module:
    """`model` with the named blocks dropped (a deep copy unless copy_model=False). Attributes such as
    `arch_name` survive; `dropped_blocks` records what is gone, so checkpoints can rebuild the structure."""
    names = list(names)
    known = {block.name: block for block in droppable_blocks(model)}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise PipelineError(
            f"cannot drop {', '.join(unknown)}: not a droppable block of this model "
            f"(droppable: {', '.join(known) or 'none'})"
        )
    pruned = copy.deepcopy(model) if copy_model else model
    for name in names:
        block = pruned.get_submodule(name)
        replacement = DroppedBlock() if known[name].kind == "identity" else ProjectionShortcut(block.downsample)
        replace_module(pruned, name, replacement)
    pruned.dropped_blocks = sorted(set(getattr(model, "dropped_blocks", [])) | set(names), key=_forward_key(model))
    return pruned


def _forward_key(model: nn.Module):
    order = {name: index for index, (name, _) in enumerate(model.named_modules())}
    return lambda name: order.get(name, len(order))


def conv_count(model: nn.Module) -> int:
    return sum(1 for m in model.modules() if isinstance(m, nn.Conv2d))


# checkpoints of dropped models record `dropped_blocks`; the loader rebuilds them through this (models/ imports no
# technique)
register_architecture_change(
    "dropped_blocks",
    lambda model, names: without_blocks(model, names, copy_model=False),
    lambda names: f"without blocks {', '.join(names)}",
)
