"""The process's memory, importable without torch: its peak (the run folder records it per stage) and how many
images one inference chunk may take."""

import math
import resource
import sys


def peak_rss_mb() -> float:
    """The process's peak resident memory so far, in MiB, or the largest finished child's (trtexec, a torchrun
    rank) when that was larger. Monotonic: a stage that raises it is the stage that needed the memory."""
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return round(peak * unit / 2**20, 1)


# values per inference chunk: 8 RGB images at 224 px. Memory first: a 224-px image's first ResNet activation alone is
# 3.2 MB, and 256 of them at once (drop's probes once did that) are gigabytes. Speed too: on a CPU, per image, a
# no-grad torchvision resnet50 at 224 px costs 39 / 41 / 61 / 79 ms at batch 4 / 8 / 16 / 32 (a resnet34 29 / 29 /
# 30 / 35; benchmarks/results/forward_batch.md: activations outgrow the caches), so larger chunks are slower, and 8
# is the batch the build's cost probe times a forward at (recipes/costs.py). Fashion-MNIST images go 256 at once.
CHUNK_VALUES = 8 * 3 * 224 * 224


def inference_batch(sample_shape, largest: int = 256) -> int:
    """How many images one no-grad forward takes at a time: `largest` for small inputs, fewer for large."""
    values = math.prod(int(size) for size in sample_shape)
    return max(1, min(largest, CHUNK_VALUES // max(1, values)))
