"""trtexec runner: NVIDIA's own harness times an engine (or builds one from ONNX and times it).

Flags `--useCudaGraph --noDataTransfers --useSpinWait --separateProfileRun` give GPU compute time that is
comparable across machines; the per-iteration times come from `--exportTimes` JSON and the per-layer profile
from `--exportProfile`. trtexec measures only: it returns no outputs, so parity checks use the TensorRT runner.
"""

import tempfile
from pathlib import Path

import numpy as np

from pipeline.errors import MissingDependency, PipelineError
from pipeline.portable import trtexec_loader
from pipeline.portable.errors import BenchError
from pipeline.runtimes.base import Runner


class TrtexecRunner(Runner):
    name = "trtexec"
    times_itself = True  # measure_latency hands the loop to trtexec

    def __init__(
        self,
        model_path: Path,
        precision: str = "fp32",
        input_name: str | None = None,
        workspace_mb: int | None = None,
        dla_core: int | None = None,
        tensorrt_major: int | None = None,
    ):
        super().__init__()
        if trtexec_loader.trtexec_path() is None:
            raise MissingDependency(
                "trtexec not found on PATH (it ships with TensorRT: /usr/src/tensorrt/bin on Jetson)"
            )
        self.model_path = Path(model_path)
        self.precision, self.input_name = precision, input_name
        self.workspace_mb, self.dla_core, self.tensorrt_major = workspace_mb, dla_core, tensorrt_major
        self.profile: list[dict] = []

    def activate_impl(self) -> None:
        if not self.model_path.is_file():
            raise PipelineError(f"model not found: {self.model_path}")

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        raise PipelineError("trtexec measures latency only; run outputs through the tensorrt or onnxruntime runner")

    def timed_runs(self, example: np.ndarray, warmup: int, runs: int) -> list[float]:
        """Per-iteration GPU compute milliseconds for `runs` iterations after `warmup` ms of warm-up."""
        with tempfile.TemporaryDirectory(prefix="edge-pipeline-trtexec-") as folder:
            times, profile = Path(folder) / "times.json", Path(folder) / "profile.json"
            command = trtexec_loader.trtexec_command(
                str(self.model_path),
                precision=self.precision,
                input_name=self.input_name,
                input_shape=tuple(example.shape[1:]),
                batch=int(example.shape[0]),
                runs=runs,
                warmup_ms=max(200, warmup),
                engine_path=None,
                times_path=str(times),
                profile_path=str(profile),
                workspace_mb=self.workspace_mb,
                dla_core=self.dla_core,
                tensorrt_major=self.tensorrt_major,
            )
            try:
                measured = trtexec_loader.run_trtexec(command, str(times))
                self.profile = trtexec_loader.parse_trtexec_profile(str(profile)) if profile.is_file() else []
            except BenchError as error:
                raise PipelineError(str(error)) from None
        return measured

    def deactivate_impl(self) -> None:
        pass

    def describe_impl(self) -> dict:
        return {
            "runtime": "trtexec",
            "version": None,
            "threads": None,
            "flags": trtexec_loader.TRTEXEC_TIMING_FLAGS,
            "model": str(self.model_path),
        }
