"""THE timing routine: every stage that reports a latency calls `measure_latency`, so numbers from
different stages (and runtimes) are measured the same way and can be compared. The loop and the statistics
live in `runtimes/device_bench.py`, which also runs standalone on remote devices."""

from contextlib import nullcontext
from dataclasses import asdict, dataclass

import numpy as np

from pipeline.errors import PipelineError
from pipeline.runtimes.base import Runner
from pipeline.runtimes.device_bench import BenchError, summarize_ms, time_calls


@dataclass
class LatencyStats:
    median_ms: float
    mean_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    cv: float  # coefficient of variation (std / mean): above ~0.1 the machine was busy, distrust small gains
    runs: int  # timed runs actually made (fewer than asked when max_seconds cut the loop)
    warmup: int  # untimed runs made first
    batch: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_times_ns(cls, times_ns: list[int], *, warmup: int, batch: int) -> "LatencyStats":
        return cls(**summarize_ms(np.asarray(times_ns, dtype=np.float64) / 1e6), warmup=warmup, batch=batch)


def measure_latency(runner: Runner, example: np.ndarray, *, warmup: int = 20, runs: int = 200,
                    max_seconds: float | None = None) -> LatencyStats:
    """Time `runner.infer(example)` end to end (host input to host output), one call per sample.

    Warm-up calls (allocator, lazy kernel selection, caches) are not timed. `max_seconds` bounds the
    timed loop: it stops once the budget is spent, but only after at least 10 runs; `runs` in the
    result says how many were made. An inactive runner is activated for the measurement and deactivated
    afterwards; session creation is never timed. A runner that times itself (trtexec) runs its own loop.
    """
    samples = latency_samples_ms(runner, example, warmup=warmup, runs=runs, max_seconds=max_seconds)
    return LatencyStats.from_times_ns([int(ms * 1e6) for ms in samples], warmup=warmup, batch=int(example.shape[0]))


def latency_samples_ms(runner: Runner, example: np.ndarray, *, warmup: int = 20, runs: int = 200,
                       max_seconds: float | None = None) -> list[float]:
    """The raw per-call milliseconds behind `measure_latency` (interleaved comparisons summarise them)."""
    example = np.ascontiguousarray(example, dtype=np.float32)
    scope = nullcontext(runner) if runner.is_active else runner
    with scope:
        if getattr(runner, "times_itself", False):  # trtexec: its own loop, GPU compute time per iteration
            return list(runner.timed_runs(example, warmup, runs))
        try:
            times_ns = time_calls(lambda: runner.infer(example), warmup=warmup, runs=runs, max_seconds=max_seconds)
        except BenchError as error:
            raise PipelineError(str(error)) from None
    return [t / 1e6 for t in times_ns]
