"""Atomic writes (temp file + rename) and hashing, so an interrupted run never leaves a half-written file.
The byte-level write and the file hash are `portable.files`, shared with the device script."""

import copy
import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any

from pipeline.portable.files import atomic_write_bytes, sha256_file

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_torch_save",
    "canonical_strings",
    "sha256_file",
    "sha256_json",
]


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


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
