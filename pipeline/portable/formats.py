"""Format versions of the records the pipeline writes and later reads back: run manifests, stage cache keys,
engine stamps, gate baselines and bundle manifests. Each carries `format` ("edge-pipeline/<kind>-v<N>") and
`format_version` (N). A reader names the version it writes; an older record is migrated step by step where a
migration exists, otherwise refused in one line that says what to do, and so is a newer one.

Records written before `format_version` existed carry only the format string; its -vN is their version, so
they read as they always did."""

from __future__ import annotations  # Python 3.8 on JetPack 5

import re

from .errors import BenchError

PREFIX = "edge-pipeline/"


class FormatError(BenchError):
    """A record this release cannot read (not one of ours, too old to migrate, or too new)."""


def format_fields(kind: str, version: int) -> dict:
    """The two keys that open every record of `kind` written at `version`."""
    return {"format": f"{PREFIX}{kind}-v{version}", "format_version": version}


def format_version(record, kind: str) -> int | None:
    """The version of a `kind` record, or None when it is not one."""
    if not isinstance(record, dict):
        return None
    match = re.fullmatch(re.escape(PREFIX + kind) + r"-v(\d+)", str(record.get("format", "")))
    if match is None:
        return None
    version = record.get("format_version", int(match.group(1)))
    return version if isinstance(version, int) and version == int(match.group(1)) else None


def read_format(record, kind: str, current: int, *, what: str, fix: str, migrations=None) -> dict:
    """`record` brought to version `current`. `what` names the record in the message ("run folder runs/x");
    `fix` is what the user should do with one this release cannot read; `migrations[n]` turns a version-n
    record into a version-(n+1) one."""
    version = format_version(record, kind)
    if version is None:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise FormatError(f"{what} is not an edge-pipeline {kind} record (format {found!r}): {fix}")
    if version > current:
        raise FormatError(
            f"{what} was written by a newer edge-pipeline ({kind} format v{version}; this release "
            f"reads up to v{current}): upgrade edge-pipeline to read it"
        )
    migrated = dict(record)
    while version < current:
        step = (migrations or {}).get(version)
        if step is None:
            raise FormatError(
                f"{what} was written by an older edge-pipeline ({kind} format v{version}; this release "
                f"reads v{current} and cannot convert it): {fix}"
            )
        migrated = step(migrated)
        version += 1
    migrated.update(format_fields(kind, current))
    return migrated
