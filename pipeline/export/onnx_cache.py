"""This machine's cache of exported ONNX files, keyed by everything that decides an export's bytes.

Why: every build exports its teacher, and the same checkpoint again whenever a user builds it for another target,
in a new run folder, or re-runs a stage whose inputs did not change: a torch.export of a 224-px ResNet-50 takes
18-28 s on 2 cores (the scale rows), the 28-px ResNet-20's a few (the test suite exports the embedded teacher in most of its
end-to-end builds). The key is the checkpoint file's SHA-256, how it is loaded (the stage's TeacherSpec), the
opset, the versions of torch, onnx and onnxscript, and the SHA-256 of this package's exporter source, so an edit
of the exporter or an upgrade exports afresh. A cached file is not trusted blindly either: the export stage checks
its parity with the loaded model exactly as it checks a new export.

Where: $PIPELINE_EXPORT_CACHE, else $XDG_CACHE_HOME/edge-pipeline/onnx (~/.cache/...); PIPELINE_EXPORT_CACHE=off
turns it off. The oldest entries go once it holds more than MAX_BYTES."""

import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from pipeline.export import onnx_export
from pipeline.export.onnx_export import ExportResult
from pipeline.fileio import atomic_write_json
from pipeline.portable.files import atomic_write_bytes, sha256_file

MAX_BYTES = 2 * 1024**3  # a few 224-px teachers and their students
FORMAT_VERSION = 1


def cache_folder() -> Path | None:
    chosen = os.environ.get("PIPELINE_EXPORT_CACHE")
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "off", "0", "none") else Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge-pipeline" / "onnx"


def _versions() -> dict:
    import onnx
    import onnxscript
    import torch

    source = Path(onnx_export.__file__).read_bytes()
    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "exporter_source": hashlib.sha256(source).hexdigest(),
    }


def export_key(checkpoint: Path, loading: dict, opset: int) -> str:
    """What decides the exported bytes of `checkpoint` loaded with `loading` (a JSON-able dict)."""
    parts = {
        "format_version": FORMAT_VERSION,
        "checkpoint_sha256": sha256_file(checkpoint),
        "loading": loading,
        "opset": opset,
        **_versions(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def holds(key: str) -> bool:
    folder = cache_folder()
    return folder is not None and (folder / f"{key}.onnx").is_file() and (folder / f"{key}.json").is_file()


def fetch(key: str, destination: Path) -> ExportResult | None:
    """The cached export copied to `destination`, or None (no cache, no entry, or an unreadable one)."""
    if not holds(key):
        return None
    folder = cache_folder()
    try:
        fields = json.loads((folder / f"{key}.json").read_text())
        result = ExportResult(**{**fields, "path": destination})
        shutil.copyfile(folder / f"{key}.onnx", destination)
        os.utime(folder / f"{key}.onnx")  # recently used: the last to be evicted
    except (OSError, ValueError, TypeError):  # unreadable, or a record of other fields: export afresh
        return None
    return result if destination.stat().st_size == result.size_bytes else None


def store(key: str, result: ExportResult) -> None:
    """Keep a copy of a fresh export; a cache that cannot be written is skipped (it only saves time)."""
    folder = cache_folder()
    if folder is None:
        return
    try:
        atomic_write_json(folder / f"{key}.json", {**asdict(result), "path": None})
        # the file last, whole or not at all: an entry is complete once it is there
        atomic_write_bytes(folder / f"{key}.onnx", Path(result.path).read_bytes())
        _evict(folder)
    except OSError:
        return


def _evict(folder: Path) -> None:
    entries = sorted(folder.glob("*.onnx"), key=lambda path: path.stat().st_mtime, reverse=True)
    total = 0
    for path in entries:
        total += path.stat().st_size
        if total > MAX_BYTES:
            path.unlink(missing_ok=True)
            path.with_suffix(".json").unlink(missing_ok=True)
