"""Identity-initialised 1x1 adapters next to each gap left by a dropped block, and their fusion.

An adapter sits right after the last main-path convolution that runs before the gap (before that
conv's BatchNorm). Being linear, bias-free and 1x1, it folds exactly into that convolution:
W'[o] = sum_p P[o, p] W[p] (and b' = P b), so the deployed graph has no extra layer. BatchNorm is
folded into the convolutions by the ONNX exporter as for every model (the export has no
BatchNormalization node; tests check both)."""

import torch
import torch.nn as nn

from pipeline.drop.blocks import DroppedBlock, ProjectionShortcut, replace_module
from pipeline.errors import PipelineError


class AdaptedConv(nn.Module):
    """A convolution followed by a trainable 1x1 adapter (identity at initialisation, so nothing changes)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv
        channels = conv.out_channels
        self.adapter = nn.Conv2d(channels, channels, 1, bias=False)
        with torch.no_grad():
            self.adapter.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
        self.adapter.to(device=conv.weight.device, dtype=conv.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.conv(x))

    def fused(self) -> nn.Conv2d:
        conv = self.conv
        if conv.groups != 1:
            raise PipelineError("an adapter can only fold into a dense (groups=1) convolution")
        fused = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        mixing = self.adapter.weight.detach()[:, :, 0, 0]
        with torch.no_grad():
            fused.weight.copy_(
                torch.einsum("op,pikl->oikl", mixing.double(), conv.weight.double()).to(conv.weight.dtype)
            )
            if conv.bias is not None:
                fused.bias.copy_((mixing.double() @ conv.bias.double()).to(conv.bias.dtype))
        return fused


def _is_kept_shortcut(name: str) -> bool:
    # a kept block's own projection shortcut is not on the path into the gap's successor's body
    return ".downsample" in f".{name}"


def gap_convs(pruned: nn.Module, input_shape: tuple[int, int, int]) -> list[str]:
    """Names of the convolutions an adapter goes after: for each gap, the last dense main-path convolution
    that runs before it (one per conv even when several gaps follow it)."""
    order: list[tuple[str, nn.Module]] = []
    hooks = [
        module.register_forward_pre_hook(lambda m, _x, name=name: order.append((name, m)))
        for name, module in pruned.named_modules()
        if isinstance(module, (nn.Conv2d, AdaptedConv, DroppedBlock, ProjectionShortcut))
    ]
    parameter = next(pruned.parameters())
    was = pruned.training
    try:
        pruned.eval()
        with torch.no_grad():
            pruned(torch.zeros(1, *input_shape, device=parameter.device, dtype=parameter.dtype))
    finally:
        pruned.train(was)
        for hook in hooks:
            hook.remove()
    inside_adapted = {
        f"{name}.{child}"
        for name, m in pruned.named_modules()
        if isinstance(m, AdaptedConv)
        for child in ("conv", "adapter")
    }
    chosen, last = [], None
    for name, module in order:
        if isinstance(module, (DroppedBlock, ProjectionShortcut)):
            if last is None:
                raise PipelineError(f"no convolution runs before the dropped block at {name}; it cannot be adapted")
            if last not in chosen:
                chosen.append(last)
        elif isinstance(module, AdaptedConv):
            last = name
        elif name not in inside_adapted and module.groups == 1 and not _is_kept_shortcut(name):
            last = name
    return chosen


def insert_adapters(pruned: nn.Module, input_shape: tuple[int, int, int]) -> list[str]:
    """Put an identity adapter after every gap's preceding convolution (in place); returns their names."""
    names = []
    for name in gap_convs(pruned, input_shape):
        module = pruned.get_submodule(name)
        if isinstance(module, AdaptedConv):
            names.append(name)
            continue
        replace_module(pruned, name, AdaptedConv(module))
        names.append(name)
    return names


def adapter_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [m.adapter.weight for m in model.modules() if isinstance(m, AdaptedConv)]


def fuse_adapters(model: nn.Module) -> nn.Module:
    """Fold every adapter into its convolution, in place; the result has the plain dropped structure."""
    for name, module in list(model.named_modules()):
        if isinstance(module, AdaptedConv):
            replace_module(model, name, module.fused())
    return model


def fold_adapters_checked(model: nn.Module, check: torch.Tensor, tolerance: float = 1e-4) -> tuple[nn.Module, float]:
    """A copy of `model` with its adapters folded into the convolutions, and the largest output difference on
    `check`; refuses (PipelineError) when folding changed the outputs by more than `tolerance`."""
    import copy

    fused = fuse_adapters(copy.deepcopy(model))
    with torch.no_grad():
        difference = float((model(check) - fused(check)).abs().max())
    if difference > tolerance:
        raise PipelineError(f"folding the adapters changed the outputs by {difference:.2e}; refusing to hand on")
    return fused, difference
