"""Progress a person and a CI log can read: rich bars with rate and ETA on a terminal; where stderr is not a
terminal (a CI log, `2> file`), one plain line per running loop at least every 30 s (step, rate, ETA and the
loop's own figures, such as its loss); nothing with --quiet."""

import os
import sys
import threading
import time
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


def is_quiet() -> bool:
    return _quiet


def log(message: str) -> None:
    """A status line on stderr (stdout stays clean for --json)."""
    if not _quiet:
        console.print(message, highlight=False, soft_wrap=True)  # a log line is never broken at 80 columns


LOG_EVERY_S = 30.0  # a CI log gets a line from each running loop at least this often


def log_every_s() -> float:
    """Read when a loop starts (PIPELINE_LOG_EVERY_S; 0: a line at every step, as the tests use)."""
    return float(os.environ.get("PIPELINE_LOG_EVERY_S", LOG_EVERY_S))


class _Task:
    """`advance(steps, fraction=..., **figures)`: `fraction` (of a time budget) gives the ETA of a loop that has
    no step count; `figures` (a loss, say) are shown in the log line. Without a terminal, a line is logged when a
    step ends `every` seconds after the last line, and a watchdog thread logs one when a single step takes longer
    than that (a 224-px distillation step can take minutes), so a CI log is never silent for longer."""

    def __init__(self, progress: Progress | None, task_id, total: int | None, description: str, log_lines: bool):
        self._progress, self._task_id, self.total = progress, task_id, total
        self.description = description
        self._log_lines, self._every = log_lines, log_every_s()
        self.done, self._started, self._first_done = 0, time.monotonic(), None
        self._logged_at, self._fraction, self._first_fraction, self._figures = self._started, None, None, {}
        self._lock = threading.Lock()

    def advance(self, steps: int = 1, fraction: float | None = None, **figures) -> None:
        if self._progress is not None:
            self._progress.update(self._task_id, advance=steps)
        with self._lock:
            self.done += steps
            self._fraction = fraction
            self._figures = {name: value for name, value in figures.items() if value is not None}
            if self._first_done is None:  # a resumed loop's first advance is its earlier steps: not this run's rate
                self._first_done, self._first_fraction, self._started = self.done, fraction, time.monotonic()
                return
        self._log_if_due()

    def _log_if_due(self) -> None:
        if not self._log_lines:
            return
        with self._lock:
            now = time.monotonic()
            if now - self._logged_at < self._every:
                return
            self._logged_at = now
            line = self._line(now)
        log(line)

    def _line(self, now: float) -> str:
        made, elapsed = self.done - (self._first_done or 0), now - self._started
        rate = made / elapsed if elapsed > 0 else 0.0
        fraction = self._fraction if self._fraction is not None else (self.total and self.done / self.total)
        remaining = None
        if fraction and 0 < fraction < 1:
            estimates = []
            if self.total and rate > 0:
                estimates.append((self.total - self.done) / rate)
            if self._fraction is not None and fraction > (self._first_fraction or 0):
                # the budget left, at the pace this run has spent it (a resumed run began part-way through);
                # a loop bounded by steps and by time ends at whichever comes first
                estimates.append(elapsed * (1 - fraction) / (fraction - (self._first_fraction or 0)))
            remaining = min(estimates) if estimates else None
        parts = [f"{self.description}: step {self.done}" + (f"/{self.total}" if self.total else "")]
        if rate > 0:
            parts.append(f"{rate:.2f} steps/s" if rate >= 0.1 else f"{1 / rate:.1f} s/step")
        if remaining is not None:
            parts.append(f"ETA {duration(remaining)}")
        parts += [
            f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"
            for name, value in self._figures.items()
        ]
        return ", ".join(parts)

    def set(self, description: str) -> None:
        self.description = description
        if self._progress is not None:
            self._progress.update(self._task_id, description=description)

    @contextmanager
    def watchdog(self):
        """While the loop runs, a line at least every `every` seconds even if no step ends."""
        if not self._log_lines or self._every <= 0:
            yield
            return
        stop = threading.Event()

        def watch():
            while not stop.wait(self._every / 4):
                self._log_if_due()

        thread = threading.Thread(target=watch, name="progress-log", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def duration(seconds: float) -> str:
    """An hour and more as "10 h 05 min", a minute and more as "3 min 05 s", less as "42 s": how progress lines
    and the plan show time."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


@contextmanager
def progress_bar(description: str, total: int | None):
    """Yield an object with `.advance()`; draws a bar only on an interactive terminal."""
    if _quiet or not sys.stderr.isatty():
        task = _Task(None, None, total, description, log_lines=not _quiet)
        with task.watchdog():
            yield task
        return
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=True) as progress:
        yield _Task(progress, progress.add_task(description, total=total), total, description, log_lines=False)
