"""How a latency is measured: the settings every stage, the gate and the benchmarks pass to the one timing
protocol (`pipeline.measure.timing`), and the facts a cached measurement is valid for."""

import math
import platform
from dataclasses import asdict, dataclass, replace

import numpy as np

from pipeline.preprocess import Preprocess


@dataclass(frozen=True)
class LatencySettings:
    """How latency is measured: the target's runtime, batch and threads, plus how long to time."""

    runtime: str = "onnxruntime"
    batch: int = 1
    threads: int | None = None
    warmup: int = 20
    runs: int = 200  # timed runs per model per round
    rounds: int = 5
    max_seconds: float | None = 2.0  # per model per round; the routine still makes >= 10 runs
    noise_factor: float = 2.0  # block savings below noise_factor x noise are re-measured (drop)
    # where the numbers come from: "local" (this machine, the target's runtime), "remote" (the target's host over
    # SSH) or "proxy" (this machine's onnxruntime standing in for a runtime it does not have; labelled as such)
    source: str = "local"
    proxy_for: str | None = None  # the runtime a proxy stands in for
    precision: str = "fp32"  # TensorRT engines are built at this precision
    host: str | None = None
    remote: dict | None = None  # port, python, identity, ssh_options, workdir
    tensorrt: dict | None = None  # max_batch, workspace_mb, dla_core, gpu_fallback

    def to_dict(self) -> dict:
        return asdict(self)


def target_latency_settings(target, **fields) -> LatencySettings:
    """The one way a stage, the bench or the gate sets up a measurement for a target: its runtime, batch,
    threads and run counts, and where it is measured (here, by proxy, or on its host); `fields` override."""
    return LatencySettings(
        **{
            "batch": target.batch,
            "threads": target.threads,
            "warmup": target.bench.warmup,
            "runs": target.bench.runs,
            **measurement_options(target),
            **fields,
        }
    )


def spread_over_rounds(settings: LatencySettings, *, warmup: int, runs: int, rounds: int) -> LatencySettings:
    """`warmup` and `runs` in all, shared out over `rounds` interleaved rounds: per round at least 2 timed runs
    and 2 warm-up runs (the other models ran in between), and no time cut, so every model gets the same number
    of samples (the bench's protocol)."""
    rounds = max(1, min(rounds, runs))
    return replace(
        settings,
        warmup=max(2, math.ceil(warmup / rounds)),
        runs=max(2, math.ceil(runs / rounds)),
        rounds=rounds,
        max_seconds=None,
    )


def runtime_version(runtime: str) -> str:
    if runtime == "onnxruntime":
        import onnxruntime

        return onnxruntime.__version__
    if runtime == "tensorrt":
        from pipeline.runtimes.tensorrt_runner import import_tensorrt

        return str(import_tensorrt().__version__)
    return "unknown"


def example_input(settings: LatencySettings, preprocess: Preprocess, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((settings.batch, *preprocess.input_shape)).astype(np.float32)


def latency_source(target) -> tuple[str, str | None]:
    """Where this target's latency can be measured from here: ("remote", None) over SSH to its host,
    ("local", None) with its runtime on this machine, or ("proxy", why) with this machine's onnxruntime."""
    if target.is_remote:
        return "remote", None
    if target.runtime == "tensorrt":
        from pipeline.runtimes.tensorrt_runner import tensorrt_available

        reason = tensorrt_available()
        if reason is not None:
            return "proxy", reason
    return "local", None


def measurement_options(target) -> dict:
    """The LatencySettings fields that say where and how latency is measured for the target."""
    source, _ = latency_source(target)
    ssh = target.remote
    remote = (
        {
            "port": ssh.port,
            "python": ssh.python,
            "identity": ssh.identity,
            "ssh_options": list(ssh.ssh_options),
            "workdir": ssh.workdir,
        }
        if target.is_remote
        else None
    )
    trt = target.tensorrt
    tensorrt = (
        {
            "max_batch": target.max_batch,
            "workspace_mb": trt.workspace_mb,
            "dla_core": trt.dla_core,
            "gpu_fallback": trt.gpu_fallback,
        }
        if target.runtime == "tensorrt"
        else None
    )
    if target.runtime != "tensorrt":
        engine_precision = "fp32"
    elif target.precision in ("int8", "binary"):
        engine_precision = "fp16"  # blocks and candidates are float models: INT8 engines need Q/DQ in the ONNX
    else:
        engine_precision = target.precision
    return {
        "runtime": "onnxruntime" if source == "proxy" else target.runtime,
        "source": source,
        "proxy_for": target.runtime if source == "proxy" else None,
        "host": target.host if target.is_remote else None,
        "remote": remote,
        "tensorrt": tensorrt,
        "precision": engine_precision,
    }


def cpu_model() -> str:
    """The CPU by name (/proc/cpuinfo): recorded with every latency figure and plan."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith(("model name", "Model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
