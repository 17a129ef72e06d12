"""Version strings as target files and TensorRT write them ("10.3", "10.3.0.30", "11"), compared part by part: one
place for the target file's checks, the JetPack/TensorRT facts and an on-device report's check."""

import re


def version_tuple(text) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", str(text)))


def version_in_range(version: str, low: str | None, high: str | None) -> bool:
    """Inclusive range; `high` compares only as many parts as it names ("10" admits 10.14.1, "11.4" 11.4.1)."""
    have = version_tuple(version)
    if low is not None and have < version_tuple(low):
        return False
    if high is not None:
        limit = version_tuple(high)
        return have[: len(limit)] <= limit
    return True


def tensorrt_accepted(version: str, low: str | None, high: str | None, releases=()) -> bool:
    """In [low, high] and, where the board's releases are listed, one of them ("10.3" admits 10.3.x)."""
    if not version_in_range(version, low, high):
        return False
    return not releases or any(version_in_range(version, r["tensorrt"], r["tensorrt"]) for r in releases)
