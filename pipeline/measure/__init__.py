"""The measurement layer, below every stage: how latency is measured (`LatencySettings`), the one interleaved
timing protocol (`time_onnx_models`, `time_runners`) over the runtime layer's runners, and the one paired-ratio
statistic (`paired_ratio`), and top-1 accuracy through a runner (`accuracy_with_runner`). No stage times a model
any other way, and this package imports no stage."""

from pipeline.measure.accuracy import accuracy_with_runner, predictions_with_runner
from pipeline.measure.flops import onnx_flops
from pipeline.measure.paired import PairedRatio, SlowdownQuestion, bootstrap_ci, paired_ratio, trimmed_mean
from pipeline.measure.record import LATENCY_RECORD_KEYS, latency_record
from pipeline.measure.rounds import MIN_ROUNDS, RoundsPolicy
from pipeline.measure.settings import (
    LatencySettings,
    example_input,
    latency_source,
    measurement_options,
    runtime_version,
    spread_over_rounds,
    target_latency_settings,
)
from pipeline.measure.timing import (
    LatencyStats,
    latency_samples_ms,
    make_runner,
    measure_latency,
    runner_for,
    time_onnx_models,
    time_remotely,
    time_runners,
)

__all__ = [
    "accuracy_with_runner",
    "predictions_with_runner",
    "MIN_ROUNDS",
    "RoundsPolicy",
    "LATENCY_RECORD_KEYS",
    "LatencySettings",
    "LatencyStats",
    "PairedRatio",
    "SlowdownQuestion",
    "bootstrap_ci",
    "example_input",
    "latency_record",
    "latency_samples_ms",
    "latency_source",
    "make_runner",
    "measure_latency",
    "measurement_options",
    "onnx_flops",
    "paired_ratio",
    "runner_for",
    "runtime_version",
    "spread_over_rounds",
    "target_latency_settings",
    "time_onnx_models",
    "time_remotely",
    "time_runners",
    "trimmed_mean",
]
