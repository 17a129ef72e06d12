"""A tally of the `pipeline` commands the tests run end to end, printed at the end of every session.

Most of the suite constructs stages on tiny models (tests/test_stages.py and the unit tests beside it); a
handful of runs go through the command line the way a user's does, and issue 21 keeps them to a dozen outside
the hostile-input suite, which needs whole runs to break. A run counts when it is a command that runs stages
(not `--plan` or `--help`) and it exits 0; readers such as `report`, `bundle` and `verify` do not count.

This module is imported by the forked CLI's server and children too: it imports nothing heavy."""

import os

STAGE_COMMANDS = {
    "build",
    "synthesize",
    "distill",
    "drop",
    "quantize",
    "search",
    "export",
    "bench",
    "engine",
    "gate",
    "accept",
}
HOSTILE_SUITE = "tests/test_hostile.py"

runs: list[tuple[str, str]] = []  # (test id, command line) of every counted run in this session


def record(args: tuple[str, ...] | list[str], returncode: int) -> None:
    command = list(args)[:2] if list(args)[:1] == ["teacher"] else list(args)[:1]
    counted = command in (["teacher", "train"], *([name] for name in STAGE_COMMANDS))
    if counted and returncode == 0 and not {"--plan", "--help"} & set(args):
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" (", 1)[0]
        runs.append((test, " ".join(["pipeline", *args])))


def summary() -> list[str]:
    outside = [(test, line) for test, line in runs if not test.startswith(HOSTILE_SUITE)]
    lines = [f"CLI end-to-end runs: {len(outside)} outside {HOSTILE_SUITE} (issue 21: at most 12), {len(runs)} in all"]
    lines += [f"  {test}: {line[:110]}" for test, line in outside]
    return lines
