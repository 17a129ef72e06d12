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


# values per inference chunk: 2**23 floats (32 MiB of input) is 10,700 Fashion-MNIST images but 55 RGB images at
# 224 px, whose first ResNet activation alone is 3.2 MB each: 256 of those at once (drop's probes did that) are
# gigabytes of activations.
CHUNK_VALUES = 2**23


def inference_batch(sample_shape, largest: int = 256) -> int:
    """How many images one no-grad forward takes at a time: `largest` for small inputs, fewer for large."""
    values = math.prod(int(size) for size in sample_shape)
    return max(1, min(largest, CHUNK_VALUES // max(1, values)))
