"""The timing routine and its statistics: the package's measurement layer and the device script both time
with these, so local and remote numbers come from identical code."""

from __future__ import annotations  # Python 3.8 on JetPack 5

import time

import numpy as np

from .errors import BenchError

MIN_RUNS_WHEN_CUT = 10  # a time budget never leaves fewer samples than this (percentiles need a few)


def time_calls(call, *, warmup: int, runs: int, max_seconds: float | None = None) -> list[int]:
    """Nanoseconds per call: `warmup` untimed calls, then up to `runs` timed ones (stopping once `max_seconds`
    are spent, but never before 10 samples)."""
    if runs < 1 or warmup < 0:
        raise BenchError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    for _ in range(warmup):
        call()
    times_ns = []
    deadline = None if max_seconds is None else time.perf_counter_ns() + int(max_seconds * 1e9)
    for _ in range(runs):
        start = time.perf_counter_ns()
        call()
        end = time.perf_counter_ns()
        times_ns.append(end - start)
        if deadline is not None and end >= deadline and len(times_ns) >= MIN_RUNS_WHEN_CUT:
            break
    return times_ns


def summarize_ms(ms) -> dict:
    """median / mean / p90 / p99 / min / max / CV of a sample of milliseconds."""
    ms = np.asarray(ms, dtype=np.float64)
    mean = float(ms.mean())
    return {
        "median_ms": float(np.median(ms)),
        "mean_ms": mean,
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "cv": float(ms.std() / mean) if mean > 0 else 0.0,
        "runs": int(ms.size),
    }


def interleaved_rounds(
    timers: dict, rounds: int, seed: int = 0, on_round=None, *, min_rounds=None, enough=None, max_seconds=None
) -> dict:
    """Time every model once per round, in a new random order each round, so drift hits all alike.
    `timers[name]()` returns a list of milliseconds; the result keeps each round's median, their median, the
    mean in-round CV, and the statistics of all samples pooled.
    `rounds` is the most made. With `min_rounds`, the rounds after that many stop as soon as `enough(medians)`
    (name -> round medians so far) says the figures answer the question, or once `max_seconds` are spent."""
    rng = np.random.default_rng(len(timers) * 7919 + rounds + seed)
    medians = {name: [] for name in timers}
    cvs = {name: [] for name in timers}
    samples = {name: [] for name in timers}
    minimum = rounds if min_rounds is None else min(min_rounds, rounds)
    deadline = None if max_seconds is None else time.perf_counter() + max_seconds
    for done in range(rounds):
        if done >= minimum and (
            (enough is not None and enough(medians)) or (deadline is not None and time.perf_counter() >= deadline)
        ):
            break
        for name in rng.permutation(list(timers)):
            times = timers[name]()
            stats = summarize_ms(times)
            medians[name].append(stats["median_ms"])
            cvs[name].append(stats["cv"])
            samples[name].extend(times)
            if on_round is not None:
                on_round()
    return {
        name: {
            "round_medians_ms": medians[name],
            "median_ms": float(np.median(medians[name])),
            "cv": float(np.mean(cvs[name])),
            "pooled": summarize_ms(samples[name]),
        }
        for name in timers
    }
