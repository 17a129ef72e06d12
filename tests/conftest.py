import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cli_runs
import pytest
import torch

from pipeline.data import fashion_mnist

ROOT = Path(__file__).resolve().parents[1]

# The builds of one session share their exports of a checkpoint, as a user's builds do (export/onnx_cache.py), in
# a folder of the session's own, never the user's ~/.cache; tests/test_export.py tests the cache itself.
os.environ["PIPELINE_EXPORT_CACHE"] = tempfile.mkdtemp(prefix="edge-pipeline-export-cache-")
atexit.register(shutil.rmtree, os.environ["PIPELINE_EXPORT_CACHE"], ignore_errors=True)

# Two cores: keep torch from oversubscribing when tests run beside subprocesses.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", min(2, os.cpu_count() or 1))))

needs_fmnist = pytest.mark.skipif(
    not fashion_mnist.is_available(), reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)"
)


def run_cli(
    *args: str, timeout: float = 600, env: dict | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run the real `pipeline` console entry point in a subprocess, as a user would."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=cwd or ROOT,
    )
    cli_runs.record(args, result.returncode)
    return result


def invoke_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command of the same Typer application in this process: the same parsing, error handling, exit
    codes and output streams as the console entry point, without the five seconds a new Python process spends
    importing torch, onnx and torchvision. What needs a process of its own uses `forked_cli.fork_cli` (a SIGKILL,
    a file-size limit, a lock held by another process) or `run_cli` (Ctrl-C, torchrun, a clean import state)."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a bug escaped run_action's handling: fail the test with its traceback
    cli_runs.record(args, result.exit_code)
    return subprocess.CompletedProcess(["pipeline", *args], result.exit_code, result.stdout, result.stderr)


@pytest.fixture(scope="session")
def loopback_device(tmp_path_factory):
    """A real sshd on 127.0.0.1 with generated keys (tests/loopback.py), shared by the remote-harness tests."""
    from loopback import SKIP_REASON, start_sshd

    if SKIP_REASON:
        pytest.skip(SKIP_REASON)
    process, device = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield device
    process.terminate()
    process.wait(timeout=10)


def pytest_report_header(config):
    """Some INT8 figures depend on the CPU's instruction set (tests/test_quantize.py says which): name it."""
    from pipeline.quantize.cpu_isa import detect_cpu_isa

    return f"cpu: {detect_cpu_isa().summary()}"


def pytest_terminal_summary(terminalreporter):
    """How many tests go through the command line end to end (tests/cli_runs.py says what counts)."""
    for line in cli_runs.summary():
        terminalreporter.write_line(line)
