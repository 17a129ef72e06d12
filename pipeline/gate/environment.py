"""What a latency figure depends on, recorded with every baseline and compared before a gate trusts it."""

import os
import platform

from pipeline.measure.settings import cpu_model

KEYS_THAT_MATTER = ("cpu", "cpu_count", "threads", "runtime", "runtime_version", "machine")


def environment(runtime: str, threads: int | None) -> dict:
    from pipeline.measure import runtime_version
    from pipeline.stage import library_versions

    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "runtime": runtime,
        "runtime_version": runtime_version(runtime),
        "machine": platform.machine(),
        "host": platform.node(),
        "platform": platform.platform(),
        "libraries": library_versions(),
    }


def differences(baseline: dict, current: dict) -> list[str]:
    """What differs between two environments, among the keys that change latency."""
    return [
        f"{key}: baseline {baseline.get(key)!r}, now {current.get(key)!r}"
        for key in KEYS_THAT_MATTER
        if baseline.get(key) != current.get(key)
    ]
