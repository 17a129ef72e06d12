"""The one latency record: the keys every written latency carries (the bench stage's entries in the manifest,
`pipeline bench --json`, the bundle manifest and its model card, the gate's report), built here from what the
timing protocol returned. A fact that is not known is null, never left out, so a reader can rely on the keys."""

import socket

from pipeline.measure.settings import LatencySettings

LATENCY_RECORD_KEYS = (
    "runtime_requested",  # the target's runtime (tensorrt for a Jetson, also when a proxy stood in for it)
    "runtime_used",  # what actually ran the timed calls
    "runtime_version",
    "where",  # local | remote | proxy
    "host",  # the machine that ran them
    "batch",
    "threads",  # null: the runtime's own choice (TensorRT, trtexec)
    "rounds",  # interleaved rounds
    "median_ms",  # median of the round medians
    "p90_ms",  # of every timed call, pooled over the rounds
    "p99_ms",
    "cv",  # mean in-round coefficient of variation
    "round_medians_ms",
    "includes_transfers",  # a timed call copies the input in and the output out (null: unknown)
    "flops",  # per image, from the graph (measure/flops.py); null where unknown
    "achieved_gflops",  # flops x batch / median
    "peak_gflops",  # the target's stated peak: null until target files state one
)

# Whether one timed call includes moving the input to the device and the output back: the runners take and return
# host arrays (onnxruntime on the CPU trivially), while trtexec reports GPU compute time only.
_INCLUDES_TRANSFERS = {"onnxruntime": True, "torch": True, "tensorrt": True, "trtexec": False}


def latency_record(
    timed: dict, settings: LatencySettings, *, flops: int | None = None, peak_gflops: float | None = None
) -> dict:
    """`timed`: one model's entry from `time_onnx_models` / `time_runners`."""
    measured_on = timed.get("measured_on") or {}
    used = measured_on.get("runtime")
    median = timed["median_ms"]
    pooled = timed.get("pooled") or {}
    remote = settings.source == "remote"
    return {
        "runtime_requested": settings.proxy_for if settings.source == "proxy" else settings.runtime,
        "runtime_used": used,
        "runtime_version": measured_on.get("version"),
        "where": settings.source,
        "host": (measured_on.get("hostname") or settings.host) if remote else socket.gethostname(),
        "batch": settings.batch,
        "threads": None if used in ("tensorrt", "trtexec") else settings.threads,
        "rounds": timed.get("rounds", len(timed["round_medians_ms"])),
        "median_ms": median,
        "p90_ms": pooled.get("p90_ms"),
        "p99_ms": pooled.get("p99_ms"),
        "cv": timed["cv"],
        "round_medians_ms": timed["round_medians_ms"],
        "includes_transfers": measured_on.get("includes_transfers", _INCLUDES_TRANSFERS.get(used)),
        "flops": flops,
        "achieved_gflops": (flops * settings.batch / (median / 1e3) / 1e9) if flops and median > 0 else None,
        "peak_gflops": peak_gflops,
    }
