"""THE timing routine: every stage that reports a latency calls `measure_latency`, so numbers from
different stages (and runtimes) are measured the same way and can be compared."""

import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import numpy as np

from pipeline.errors import PipelineError
from pipeline.runtimes.base import Runner

MIN_RUNS_WHEN_CUT = 10  # a time budget never leaves fewer samples than this (percentiles need a few)


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
        ms = np.asarray(times_ns, dtype=np.float64) / 1e6
        mean = float(ms.mean())
        return cls(median_ms=float(np.median(ms)), mean_ms=mean, p90_ms=float(np.percentile(ms, 90)),
                   p99_ms=float(np.percentile(ms, 99)), min_ms=float(ms.min()), max_ms=float(ms.max()),
                   cv=float(ms.std() / mean) if mean > 0 else 0.0, runs=len(ms), warmup=warmup, batch=batch)


def measure_latency(runner: Runner, example: np.ndarray, *, warmup: int = 20, runs: int = 200,
                    max_seconds: float | None = None) -> LatencyStats:
    """Time `runner.infer(example)` end to end (host input to host output), one call per sample.

    Warm-up calls (allocator, lazy kernel selection, caches) are not timed. `max_seconds` bounds the
    timed loop: it stops once the budget is spent, but only after at least 10 runs; `runs` in the
    result says how many were made. An inactive runner is activated for the measurement and deactivated
    afterwards; session creation is never timed.
    """
    if runs < 1 or warmup < 0:
        raise PipelineError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    example = np.ascontiguousarray(example, dtype=np.float32)
    scope = nullcontext(runner) if runner.is_active else runner
    times_ns: list[int] = []
    with scope:
        for _ in range(warmup):
            runner.infer(example)
        deadline = None if max_seconds is None else time.perf_counter_ns() + int(max_seconds * 1e9)
        for _ in range(runs):
            start = time.perf_counter_ns()
            runner.infer(example)
            end = time.perf_counter_ns()
            times_ns.append(end - start)
            if deadline is not None and end >= deadline and len(times_ns) >= MIN_RUNS_WHEN_CUT:
                break
    return LatencyStats.from_times_ns(times_ns, warmup=warmup, batch=int(example.shape[0]))
