"""The `pipeline` command in a process of its own, forked from a server that imported torch, onnx and the
package once (multiprocessing's forkserver), instead of a new interpreter that spends five seconds importing
them. For the tests where a separate process is the point (a SIGKILL takes it down, a file-size limit applies to
it alone) and the imports are not: each command still starts as a fresh child with its own memory, environment,
working folder and output files, and dies the way a real one does.

This module is imported by the server and by each child: it imports nothing heavy itself."""

import multiprocessing
import os
import resource
import subprocess
import sys
from pathlib import Path

import cli_runs

# what a build imports on its way through every stage; the server imports them before it forks anything
PRELOAD = ["torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "pipeline.cli", "pipeline.recipes.build"]

_context = None


def _server():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _child(args: list[str], env: dict, cwd: str, out: str, err: str, file_size_limit: int | None) -> None:
    os.environ.update(env)
    os.chdir(cwd)
    if file_size_limit is not None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))  # write() fails with EFBIG
    for fd, path in ((1, out), (2, err)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    # unbuffered text streams over the redirected descriptors: a SIGKILL loses nothing already printed
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    from pipeline.cli import app

    app(args, prog_name="pipeline")  # exits with the command's status (SystemExit)


def fork_cli(
    *args: str, cwd: Path, env: dict | None = None, file_size_limit: int | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run `pipeline ARGS` in a forked child; returncode is -9 when it SIGKILLed itself, as with subprocess."""
    scratch = Path(os.environ.get("TMPDIR", "/tmp"))
    out, err = (scratch / f"forked-cli-{os.getpid()}-{id(args)}.{name}" for name in ("out", "err"))
    process = _server().Process(
        target=_child, args=(list(args), dict(env or {}), str(cwd), str(out), str(err), file_size_limit)
    )
    process.start()
    try:
        process.join(timeout)
        if process.exitcode is None:
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired(["pipeline", *args], timeout)
        cli_runs.record(args, process.exitcode)
        return subprocess.CompletedProcess(["pipeline", *args], process.exitcode, out.read_text(), err.read_text())
    finally:  # a timed-out child leaves its output files behind otherwise
        out.unlink(missing_ok=True)
        err.unlink(missing_ok=True)
