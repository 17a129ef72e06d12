"""The bench stage, and the accuracy routine shared by every stage (over a Runner). Timing lives in
`pipeline.measure`, below every stage."""

from pipeline.bench.accuracy import accuracy_with_runner, predictions_with_runner

__all__ = ["accuracy_with_runner", "predictions_with_runner"]
