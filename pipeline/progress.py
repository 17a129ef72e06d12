"""rich progress bars that stay quiet when output is not a terminal (CI logs) or with --quiet."""

import sys
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def log(message: str) -> None:
    """A status line on stderr (stdout stays clean for --json)."""
    if not _quiet:
        console.print(message, highlight=False)


class _Task:
    def __init__(self, progress: Progress | None, task_id, total: int | None):
        self._progress, self._task_id, self.total = progress, task_id, total
        self.description = ""

    def advance(self, steps: int = 1, **fields) -> None:
        if self._progress is not None:
            self._progress.update(self._task_id, advance=steps, **fields)

    def set(self, description: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task_id, description=description)


@contextmanager
def progress_bar(description: str, total: int | None):
    """Yield an object with `.advance()`; draws a bar only on an interactive terminal."""
    if _quiet or not sys.stderr.isatty():
        yield _Task(None, None, total)
        return
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=True) as progress:
        yield _Task(progress, progress.add_task(description, total=total), total)
