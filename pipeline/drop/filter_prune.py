"""The baseline PRACTISE compares against: channel (filter) pruning, here with torch-pruning (L1 magnitude
importance, dependency-aware so residual channels are pruned together), channel counts rounded to
multiples of 8 (what fast kernels want), pruned to a given *measured* latency by bisection on the ratio."""

import copy

import torch
import torch.nn as nn

from pipeline.drop.latency_table import time_models
from pipeline.errors import PipelineError
from pipeline.lazy import lazy_import
from pipeline.measure import LatencySettings
from pipeline.preprocess import Preprocess
from pipeline.progress import log


def classifier_layers(model: nn.Module) -> list[nn.Module]:
    """The output layer(s) torch-pruning must leave alone (the class count is fixed)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise PipelineError(f"{type(model).__name__} has no Linear classifier to protect from pruning")
    return [linears[-1]]


def filter_prune(model: nn.Module, input_shape, ratio: float, round_to: int = 8) -> nn.Module:
    """A copy of `model` with `ratio` of the channels of every prunable group removed (L1 magnitude)."""
    tp = lazy_import("torch_pruning", install="pip install torch-pruning")
    pruned = copy.deepcopy(model).cpu().eval()
    for parameter in pruned.parameters():
        parameter.requires_grad_(True)  # torch-pruning traces gradients to build its dependency graph
    example = torch.zeros(1, *input_shape)
    pruner = tp.pruner.MetaPruner(
        pruned,
        example,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio,
        ignored_layers=classifier_layers(pruned),
        round_to=round_to,
    )
    pruner.step()
    return pruned.eval()


def channel_counts(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


def prune_to_latency(
    model: nn.Module,
    preprocess: Preprocess,
    target_fraction: float,
    settings: LatencySettings,
    ratios: tuple[float, ...] = (0.2, 0.35, 0.5, 0.6, 0.7, 0.8, 0.9),
    round_to: int = 8,
) -> tuple[nn.Module, dict]:
    """Prune at each of `ratios` and measure latency(pruned) / latency(full) in one interleaved run per ratio;
    return the least-pruned model that is at least as fast as `target_fraction` (e.g. 0.7 = 30 % faster),
    or, when none is, the fastest one (`reached` False). A grid, not a bisection: latency is not monotonic
    in the ratio here: once channel counts fall to 8, onnxruntime's blocked (16-channel) AVX-512
    convolutions no longer apply, and a ratio-0.9 ResNet-20 measured barely faster than the full model."""
    trace, candidates = [], []
    for ratio in ratios:
        pruned = filter_prune(model, preprocess.input_shape, ratio, round_to)
        timed = time_models(
            {"full": model, "pruned": pruned}, preprocess, settings, label=f"filter pruning {ratio:.3f}"
        )
        fraction = timed["pruned"]["median_ms"] / timed["full"]["median_ms"]
        trace.append(
            {
                "ratio": ratio,
                "fraction": fraction,
                "full_ms": timed["full"]["median_ms"],
                "pruned_ms": timed["pruned"]["median_ms"],
                "channels": channel_counts(pruned),
            }
        )
        candidates.append((pruned, fraction, ratio))
        log(
            f"filter prune: ratio {ratio:.3f} -> {100 * (1 - fraction):.1f} % lower latency (target "
            f"{100 * (1 - target_fraction):.1f} %)"
        )
    fast_enough = [c for c in candidates if c[1] <= target_fraction]
    chosen = min(fast_enough, key=lambda c: c[2]) if fast_enough else min(candidates, key=lambda c: c[1])
    if not fast_enough:
        log(
            f"filter prune: no ratio reached {100 * (1 - target_fraction):.1f} % lower latency; the fastest "
            f"({100 * (1 - chosen[1]):.1f} %, ratio {chosen[2]:.2f}) is handed on"
        )
    return chosen[0], {"ratio": chosen[2], "fraction": chosen[1], "reached": bool(fast_enough), "trace": trace}
