"""User-facing errors: one sentence, non-zero exit, no traceback unless --debug."""


class PipelineError(Exception):
    """A failure the user can act on (bad path, wrong checkpoint, missing optional dependency...).

    The CLI prints `str(error)` on one line and exits with `exit_code`.
    """

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None):
        self.hint = hint
        super().__init__(message if hint is None else f"{message} ({hint})")


class MissingDependency(PipelineError):
    exit_code = 3


class ParityError(PipelineError):
    """An exported model disagrees with its PyTorch source beyond tolerance."""

    exit_code = 4
