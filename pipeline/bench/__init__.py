"""The bench stage: teacher and student timed in interleaved rounds on the target's runner, with their accuracy.
Timing and accuracy over a runner live in `pipeline.measure`, below every stage."""
