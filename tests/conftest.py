import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.data import fashion_mnist

ROOT = Path(__file__).resolve().parents[1]

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
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=cwd or ROOT,
    )


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
