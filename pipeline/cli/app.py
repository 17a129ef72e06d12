"""The Typer application and what every command shares: one-line errors with a non-zero exit, and output."""

import signal
import sys
import threading
import traceback
from contextlib import contextmanager
from typing import Callable, Optional

import typer
from rich.console import Console

from pipeline import progress

app = typer.Typer(
    help="Turn a trained PyTorch image classifier into a small, fast, verified edge artifact, without its "
    "training data.\n\n"
    "Typical use: `pipeline build --teacher r34.pt --target cpu`. With no --teacher, the embedded "
    "Fashion-MNIST ResNet-20 teacher is used. Every command explains itself: `pipeline COMMAND --help`.",
    # markdown: paragraphs are re-wrapped to the terminal, and text in square brackets is kept as written
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
teacher_app = typer.Typer(help="Train and inspect teachers.", no_args_is_help=True, rich_markup_mode="markdown")
stdout = Console(width=None if sys.stdout.isatty() else 120)  # CI logs: wide enough for the summary table


class Terminated(KeyboardInterrupt):
    """SIGTERM, what a CI job's timeout, `kill` and `docker stop` send: the run ends as on Ctrl-C (the stage that
    was running stops, finished stages are kept), with the exit status a shell gives a SIGTERM (143)."""


def _raise_terminated(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not interrupt the cleanup the first started
    raise Terminated()


@contextmanager
def sigterm_as_interrupt():
    """While a command runs, SIGTERM raises `Terminated` (a KeyboardInterrupt, so every cleanup that Ctrl-C
    gets, it gets too); the previous handler comes back after. Signals reach only the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_action(debug: bool, quiet: bool, action: Callable[[], object], *, out_hint: str | None = None) -> object:
    previous = progress.is_quiet()
    progress.set_quiet(quiet)
    try:
        with sigterm_as_interrupt():  # held until the one line is printed
            return _run_reporting_failures(debug, action, out_hint)
    finally:  # a command run in-process (tests, an embedding program) leaves the log as it found it
        progress.set_quiet(previous)


def _run_reporting_failures(debug: bool, action: Callable[[], object], out_hint: str | None) -> object:
    from pipeline.errors import PipelineError

    try:
        return action()
    except PipelineError as error:
        if debug:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        raise typer.Exit(error.exit_code)
    except KeyboardInterrupt as interrupt:
        where = f" in {out_hint}" if out_hint else ""
        terminated = isinstance(interrupt, Terminated)
        print(
            f"{'terminated (SIGTERM)' if terminated else 'interrupted'}: finished stages are kept{where}; "
            "run the same command again to resume",
            file=sys.stderr,
        )
        raise typer.Exit(143 if terminated else 130)
    except OSError as error:
        if debug:
            traceback.print_exc()
        print(f"error: {os_error_message(error, out_hint)}", file=sys.stderr)
        raise typer.Exit(1)
    except Exception as error:  # a bug or an environment problem: still one line unless --debug
        if debug:
            traceback.print_exc()
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(
            f"error: unexpected {type(error).__name__}: {first_line} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        raise typer.Exit(1)


def os_error_message(error: OSError, out_hint: str | None) -> str:
    """Disk full, file-size limit, read-only or forbidden folder: say which file, and that nothing finished is lost."""
    import errno

    where = f" writing {error.filename}" if error.filename else ""
    kept = f"; finished stages in {out_hint} are kept and" if out_hint else ";"
    advice = {
        errno.ENOSPC: "no space left on device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EFBIG: "file too large for this file system or the process's file-size limit",
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
    }.get(error.errno)
    if advice is None:
        return f"{error.strerror or error}{where}"
    return f"{advice}{where}{kept} the unfinished stage left nothing in place: fix it and run the same command again"


def input_shape_option(text: Optional[str]):
    if text is None:
        return None
    from pipeline.models.load import parse_input_shape

    return parse_input_shape(text)
