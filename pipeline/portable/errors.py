"""The one error type of the portable code (the package turns it into a PipelineError)."""


class BenchError(RuntimeError):
    """A failure to report in one line."""
