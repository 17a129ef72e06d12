"""The baseline PRACTISE compares against: channel (filter) pruning, here with torch-pruning (L1 magnitude
importance, dependency-aware so residual channels are pruned together), channel counts rounded to
multiples of 8 (what fast kernels want), pruned to a given *measured* latency by bisection on the ratio."""

import copy

import torch
import torch.nn as nn

from pipeline.drop.latency_table import LatencySettings, time_models
from pipeline.errors import PipelineError
from pipeline.lazy import lazy_import
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
    pruner = tp.pruner.MetaPruner(pruned, example, importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=ratio, ignored_layers=classifier_layers(pruned), round_to=round_to)
    pruner.step()
    return pruned.eval()


def channel_counts(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


def prune_to_latency(model: nn.Module, preprocess: Preprocess, target_fraction: float, settings: LatencySettings,
                     probes: int = 6, round_to: int = 8) -> tuple[nn.Module, dict]:
    """Bisection on the pruning ratio until latency(pruned) / latency(full), both measured in the same
    interleaved run, is as close as the channel rounding allows to `target_fraction` (e.g. 0.7 = 30 % faster).
    Returns the closest model that is at least as fast as asked when one was found, and the search trace."""
    low, high = 0.0, 0.95
    trace, best = [], None
    for _ in range(probes):
        ratio = (low + high) / 2
        pruned = filter_prune(model, preprocess.input_shape, ratio, round_to)
        timed = time_models({"full": model, "pruned": pruned}, preprocess, settings, label=f"filter pruning {ratio:.3f}")
        fraction = timed["pruned"]["median_ms"] / timed["full"]["median_ms"]
        trace.append({"ratio": ratio, "fraction": fraction, "full_ms": timed["full"]["median_ms"],
                      "pruned_ms": timed["pruned"]["median_ms"], "channels": channel_counts(pruned)})
        log(f"filter prune: ratio {ratio:.3f} -> {100 * (1 - fraction):.1f} % lower latency (target "
            f"{100 * (1 - target_fraction):.1f} %)")
        if fraction <= target_fraction:
            if best is None or fraction > best[1]:
                best = (pruned, fraction, ratio)
            high = ratio
        else:
            low = ratio
    if best is None:
        raise PipelineError(f"filter pruning up to ratio {high:.2f} did not reach {100 * (1 - target_fraction):.1f} % "
                            "lower latency")
    return best[0], {"ratio": best[2], "fraction": best[1], "trace": trace}
