"""Command line: parse, call, print. Every user error ends in one line and a non-zero exit.

`app.py` holds the application and the error handling, `options.py` the shared options in their help panels;
each `*_commands.py` registers one group of commands (the order of the imports is the order in `--help`)."""

from pipeline.cli import build_commands, ci_commands, info_commands, model_commands  # noqa: F401 (registers them)
from pipeline.cli.app import app

__all__ = ["app"]
