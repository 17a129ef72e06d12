"""The house style, checked: ruff's lint rules and formatter (pyproject.toml: 120 columns), and small files."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
MAX_LINES = 400


@pytest.mark.skipif(RUFF is None, reason="ruff not installed (pip install -e '.[test]')")
@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=" ".join)
def test_ruff_finds_nothing(command):
    done = subprocess.run(
        [RUFF, *command, "pipeline", "tests", "benchmarks"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]


def test_no_package_file_is_over_400_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "pipeline").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long


# the standard library of Python 3.11 that 3.10 lacks (JetPack 6's Ubuntu 22.04 runs 3.10), as the package uses it
_NEWER_THAN_310 = {("contextlib", "chdir"), ("datetime", "UTC"), ("hashlib", "file_digest"), ("typing", "Self")}


def test_the_package_keeps_to_what_python_3_10_has():
    """pyproject.toml says Python >= 3.10: no 3.11-only module or name, unless its import falls back."""
    import ast

    found = []
    for path in (ROOT / "pipeline").rglob("*.py"):
        tree = ast.parse(path.read_text())
        guarded = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try) for b in t.body for n in ast.walk(b)}
        for node in ast.walk(tree):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            if (
                isinstance(node, ast.Import)
                and any(a.name == "tomllib" for a in node.names)
                and id(node) not in guarded
            ):
                found.append(f"{where}: import tomllib without a tomli fallback")
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if (node.value.id, node.attr) in _NEWER_THAN_310:
                    found.append(f"{where}: {node.value.id}.{node.attr}")
            if isinstance(node, ast.ImportFrom) and any((node.module, a.name) in _NEWER_THAN_310 for a in node.names):
                found.append(f"{where}: from {node.module} import ...")
    assert not found, found
