"""THE timing protocol: every latency the package reports (bench, drop, quantize, search, gate, benchmarks) comes
from `time_onnx_models` / `time_runners`: several models timed in interleaved rounds (a new random order each
round, so drift of the machine hits them alike), each round a warm-up then timed calls of `measure_latency`'s
loop. Where it runs is one choice made here: this machine ("local", or "proxy" when onnxruntime stands in for
the target's runtime) or the target's host over SSH ("remote", the same loop in the standalone device script).
The loop and its statistics live in `portable/timing.py`, which the device script also runs."""

import tempfile
from contextlib import ExitStack, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.measure.paired import SlowdownQuestion
from pipeline.measure.rounds import RoundsPolicy
from pipeline.measure.settings import LatencySettings
from pipeline.portable.errors import BenchError
from pipeline.portable.timing import interleaved_rounds, summarize_ms, time_calls
from pipeline.progress import log, progress_bar
from pipeline.runtimes import OnnxRuntimeRunner, trtexec_input_name
from pipeline.runtimes.base import Runner


@dataclass
class LatencyStats:
    median_ms: float
    mean_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    cv: float  # coefficient of variation (std / mean): above ~0.1 the machine was busy, distrust small gains
    runs: int  # timed runs actually made (fewer than asked when max_seconds cut the loop)
    warmup: int  # untimed runs made first
    batch: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_times_ns(cls, times_ns: list[int], *, warmup: int, batch: int) -> "LatencyStats":
        return cls(**summarize_ms(np.asarray(times_ns, dtype=np.float64) / 1e6), warmup=warmup, batch=batch)


def measure_latency(
    runner: Runner, example: np.ndarray, *, warmup: int = 20, runs: int = 200, max_seconds: float | None = None
) -> LatencyStats:
    """Time `runner.infer(example)` end to end (host input to host output), one call per sample.

    Warm-up calls (allocator, lazy kernel selection, caches) are not timed. `max_seconds` bounds the
    timed loop: it stops once the budget is spent, but only after at least 10 runs; `runs` in the
    result says how many were made. An inactive runner is activated for the measurement and deactivated
    afterwards; session creation is never timed. A runner that times itself (trtexec) runs its own loop.
    """
    samples = latency_samples_ms(runner, example, warmup=warmup, runs=runs, max_seconds=max_seconds)
    return LatencyStats.from_times_ns([int(ms * 1e6) for ms in samples], warmup=warmup, batch=int(example.shape[0]))


def latency_samples_ms(
    runner: Runner, example: np.ndarray, *, warmup: int = 20, runs: int = 200, max_seconds: float | None = None
) -> list[float]:
    """The raw per-call milliseconds behind `measure_latency` (interleaved comparisons summarise them)."""
    example = np.ascontiguousarray(example, dtype=np.float32)
    scope = nullcontext(runner) if runner.is_active else runner
    with scope:
        if getattr(runner, "times_itself", False):  # trtexec: its own loop, GPU compute time per iteration
            return list(runner.timed_runs(example, warmup, runs))
        try:
            times_ns = time_calls(lambda: runner.infer(example), warmup=warmup, runs=runs, max_seconds=max_seconds)
        except BenchError as error:
            raise PipelineError(str(error)) from None
    return [t / 1e6 for t in times_ns]


def make_runner(runtime: str, path: Path, threads: int | None) -> Runner:
    """The runner for one model file: onnxruntime for .onnx, TensorRT (or trtexec) for a built engine."""
    if runtime == "onnxruntime":
        return OnnxRuntimeRunner(path, threads=threads)
    if runtime == "tensorrt":
        if Path(path).suffix not in (".engine", ".plan"):
            raise PipelineError(f"TensorRT runs engines, not {Path(path).name}: build one first (`pipeline engine`)")
        from pipeline.runtimes import TensorRtRunner

        return TensorRtRunner(path)
    if runtime == "trtexec":
        from pipeline.runtimes import TrtexecRunner

        return TrtexecRunner(path)
    raise PipelineError(f"unknown runtime {runtime!r}")


def runner_for(settings: LatencySettings, path: Path, folder: Path) -> Runner:
    """The settings' local runner for one ONNX file; TensorRT first builds its engine into `folder`."""
    if settings.runtime == "tensorrt":
        from pipeline.runtimes.tensorrt_engine import build_engine_file

        engine = folder / f"{Path(path).stem}-{len(list(folder.glob('*.engine')))}.engine"
        build_engine_file(
            Path(path),
            engine,
            precision=settings.precision,
            batch=settings.batch,
            **(settings.tensorrt or {}),
            timing_cache=folder / "timing.cache",
            measuring=True,  # one function decides each variant's precision (portable/engine_precision.py)
        )
        return make_runner("tensorrt", engine, settings.threads)
    if settings.runtime == "trtexec" and Path(path).suffix == ".onnx":  # built once at the target's batch and precision
        from pipeline.runtimes import TrtexecRunner

        return TrtexecRunner(Path(path), precision=settings.precision, input_name=trtexec_input_name(Path(path)))
    return make_runner(settings.runtime, Path(path), settings.threads)


def time_runners(
    runners: dict[str, Runner],
    settings: LatencySettings,
    example: np.ndarray,
    rounds: int | RoundsPolicy,
    label: str = "latency",
    enough: SlowdownQuestion | None = None,
) -> dict[str, dict]:
    """Interleaved rounds over runners made here; per model: the round medians, their median, the mean in-round
    CV, the pooled statistics of every sample, and where it was measured. `rounds`: a count, or a policy whose
    extra rounds stop once `enough(round_medians_by_model)` answers its question (rounds.py)."""
    policy = RoundsPolicy.of(rounds)
    with ExitStack() as stack:
        for runner in runners.values():
            stack.enter_context(runner)
        timers = {name: _timer(runner, example, settings) for name, runner in runners.items()}
        with progress_bar(label, policy.maximum * len(runners)) as bar:
            timed = interleaved_rounds(
                timers,
                policy.maximum,
                on_round=bar.advance,
                min_rounds=policy.minimum,
                enough=enough,
                max_seconds=policy.max_seconds,
            )
        described = next(iter(runners.values())).describe()
        measured_on = {
            "source": settings.source,
            "proxy_for": settings.proxy_for,
            **{k: v for k, v in described.items() if k in ("runtime", "version", "device", "includes_transfers")},
            "runtime_requested": settings.runtime,
            "runtime_used": described.get("runtime"),
        }
    return {
        name: {**entry, "rounds": len(entry["round_medians_ms"]), "measured_on": measured_on}
        for name, entry in timed.items()
    }


def time_onnx_models(
    paths: dict[str, Path],
    settings: LatencySettings,
    example: np.ndarray,
    rounds: int | RoundsPolicy,
    label: str = "latency",
    enough: SlowdownQuestion | None = None,
) -> dict[str, dict]:
    """Interleaved rounds over several ONNX files on the settings' runner, here or on the target's host. On the
    target's host the device script follows the same policy in one session there, asking `enough` itself."""
    if settings.source == "remote":
        return time_remotely(paths, settings, example, rounds, label, enough)
    with tempfile.TemporaryDirectory(prefix="edge-pipeline-engines-") as folder:
        runners = {name: runner_for(settings, path, Path(folder)) for name, path in paths.items()}
        return time_runners(runners, settings, example, rounds, label, enough)


def _timer(runner, example: np.ndarray, settings: LatencySettings):
    return lambda: latency_samples_ms(
        runner, example, warmup=settings.warmup, runs=settings.runs, max_seconds=settings.max_seconds
    )


def time_remotely(
    paths: dict[str, Path],
    settings: LatencySettings,
    example: np.ndarray,
    rounds: int | RoundsPolicy,
    label: str,
    enough: SlowdownQuestion | None = None,
) -> dict[str, dict]:
    """The same interleaved rounds, run by the standalone bench script on the target's host over SSH: the
    policy's minimum, then, while `enough` is unanswered, more up to its maximum or time share, all in one session
    (engines are built once)."""
    from pipeline.remote.harness import remote_run
    from pipeline.remote.ssh import SshHost

    policy = RoundsPolicy.of(rounds)
    if enough is not None and not isinstance(enough, SlowdownQuestion):
        # a closure cannot travel to the device; the device script asks only the questions it knows
        raise PipelineError(f"{label}: a remote measurement can wait only on a SlowdownQuestion, not {enough!r}")

    remote = settings.remote or {}
    host = SshHost.from_settings(settings.host, remote)
    spec = {
        "runtime": settings.runtime,
        "fallback": ["trtexec", "onnxruntime"] if settings.runtime == "tensorrt" else [],
        "batch": settings.batch,
        "input_shape": list(example.shape[1:]),
        # trtexec's --shapes need each input's name (None: a fixed batch, which takes none)
        "input_names": {name: trtexec_input_name(Path(path)) for name, path in paths.items()},
        "threads": settings.threads,
        "warmup": settings.warmup,
        "runs": settings.runs,
        "rounds": policy.maximum,
        "min_rounds": policy.minimum,
        "rounds_max_seconds": policy.max_seconds,
        "enough": None if enough is None else enough.to_dict(),
        "max_seconds": settings.max_seconds,
        "build": {"precision": settings.precision, **(settings.tensorrt or {})},
    }
    counted = f"{policy.minimum}" if policy.minimum == policy.maximum else f"{policy.minimum} to {policy.maximum}"
    log(
        f"{label}: measuring {len(paths)} model(s) on {settings.host} ({settings.runtime}, {counted} interleaved rounds)"
    )
    result = remote_run(host, dict(paths), spec, python=remote.get("python", "python3"), workdir=remote.get("workdir"))
    for warning in result.get("warnings", []):
        log(f"[yellow]{label}: {warning}[/yellow]")
    device = result.get("device", {})
    measured_on = {
        "source": "remote",
        "host": settings.host,
        "runtime": result.get("runtime_used"),
        "version": device.get(f"{result.get('runtime_used')}_version"),
        "runtime_requested": settings.runtime,
        "runtime_used": result.get("runtime_used"),
        "includes_transfers": result.get("includes_transfers"),
        **{
            k: device.get(k)
            for k in (
                "hostname",
                "nvpmodel_mode",
                "jetson_clocks",
                "jetpack",
                "l4t",
                "tensorrt_version",
                "temperatures_c",
            )
        },
    }
    return {
        name: {**entry, "rounds": len(entry["round_medians_ms"]), "measured_on": measured_on}
        for name, entry in result["models"].items()
    }
