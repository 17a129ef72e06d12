"""User-facing errors: one sentence, non-zero exit, no traceback unless --debug."""

import re


def first_line(error: BaseException) -> str:
    """The first line of a library's error, for a one-line message, without the colour codes torch puts in some;
    its type when it says nothing (a bare `assert` in onnxruntime's shape inference raises an AssertionError with
    no text)."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip().splitlines()
    return lines[0].strip() if lines else type(error).__name__


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
