"""Atomic writes (temp file + rename) and hashing, so an interrupted run never leaves a half-written file."""

import copy
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give what open() would have given
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)  # the old file, if any, is untouched
        if isinstance(error, OSError) and error.filename is None:  # a failed write() names no file: name ours
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(canonical_strings(obj), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def canonical_strings(obj: Any) -> Any:
    """A copy of the containers with every string interned. Pickle writes a second reference to the same
    string object as a back-reference and an equal but distinct one in full, so equal states loaded from a
    resume file and built afresh would otherwise serialise to different bytes (and different hashes)."""
    if isinstance(obj, str):
        return sys.intern(str(obj))
    if isinstance(obj, dict):
        rebuilt = copy.copy(obj)  # keeps the type and attributes (a state_dict's _metadata)
        rebuilt.clear()
        for key, value in obj.items():
            rebuilt[canonical_strings(key)] = canonical_strings(value)
        if getattr(rebuilt, "__dict__", None):
            for name, value in vars(rebuilt).items():
                setattr(rebuilt, name, canonical_strings(value))
        return rebuilt
    if type(obj) in (list, tuple):
        return type(obj)(canonical_strings(item) for item in obj)
    return obj


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
