"""Benchmarks shared by every stage: one timing routine, one accuracy routine, both over a Runner."""

from pipeline.bench.accuracy import accuracy_with_runner, predictions_with_runner
from pipeline.bench.latency import LatencyStats, measure_latency

__all__ = ["LatencyStats", "measure_latency", "accuracy_with_runner", "predictions_with_runner"]
