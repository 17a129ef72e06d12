"""trtexec runner: NVIDIA's own harness builds an engine from ONNX once, then times it (or times an engine file).

Flags `--useCudaGraph --noDataTransfers --useSpinWait --separateProfileRun` give GPU compute time that is
comparable across machines; the per-iteration times come from `--exportTimes` JSON and the per-layer profile
from `--exportProfile`. Which precision flags the build takes is decided by the installed trtexec's own
version (portable/engine_precision.py): TensorRT 11 has none. trtexec measures only: it returns no outputs, so
parity checks use the TensorRT runner.
"""

import shutil
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
    ):
        super().__init__()
        if trtexec_loader.trtexec_path() is None:
            raise MissingDependency(
                "trtexec not found on PATH (it ships with TensorRT: /usr/src/tensorrt/bin on Jetson)"
            )
        self.model_path = Path(model_path)
        self.precision, self.input_name = precision, input_name
        self.workspace_mb, self.dla_core = workspace_mb, dla_core
        self.profile: list[dict] = []
        self.version: tuple[int, int, int] | None = None
        self.engine: Path | None = None
        self.scratch: Path | None = None
        self.build_command: list[str] | None = None
        self.precision_note: str | None = None

    def activate_impl(self) -> None:
        if not self.model_path.is_file():
            raise PipelineError(f"model not found: {self.model_path}")
        try:
            self.version = trtexec_loader.require_trtexec_version()
        except BenchError as error:
            raise PipelineError(str(error)) from None
        self.scratch = Path(tempfile.mkdtemp(prefix="edge-pipeline-trtexec-"))
        if self.model_path.suffix in (".engine", ".plan"):
            self.engine = self.model_path  # built already: precision, DLA and workspace were fixed then

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        raise PipelineError("trtexec measures latency only; run outputs through the tensorrt or onnxruntime runner")

    def _build(self, example: np.ndarray) -> Path:
        """The engine, built once from the ONNX at this example's batch: every timing then loads the same one."""
        engine = self.scratch / "model.engine"
        decided, self.build_command = trtexec_loader.build_with_trtexec(
            str(self.model_path),
            str(engine),
            self.version,
            self.precision,
            measuring=True,
            input_name=self.input_name,
            input_shape=tuple(example.shape[1:]),
            batch=int(example.shape[0]),
            timing_cache=str(self.scratch / "timing.cache"),
            workspace_mb=self.workspace_mb,
            dla_core=self.dla_core,
        )
        self.precision_note = decided.note
        return engine

    def timed_runs(self, example: np.ndarray, warmup: int, runs: int) -> list[float]:
        """Per-iteration GPU compute milliseconds for `runs` iterations after `warmup` ms of warm-up."""
        try:
            if self.engine is None:
                self.engine = self._build(example)
            times, profile = self.scratch / "times.json", self.scratch / "profile.json"
            command = trtexec_loader.trtexec_time_command(
                str(self.engine),
                input_name=self.input_name,
                input_shape=tuple(example.shape[1:]),
                batch=int(example.shape[0]),
                runs=runs,
                warmup_ms=max(200, warmup),
                times_path=str(times),
                profile_path=str(profile),
                dla_core=self.dla_core,
            )
            measured = trtexec_loader.run_trtexec(command, str(times))
            self.profile = trtexec_loader.parse_trtexec_profile(str(profile)) if profile.is_file() else []
        except BenchError as error:
            raise PipelineError(str(error)) from None
        return measured

    def deactivate_impl(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        if self.engine is not None and self.engine != self.model_path:
            self.engine = None  # it lived in the scratch folder

    def describe_impl(self) -> dict:
        return {
            "runtime": "trtexec",
            "version": ".".join(str(part) for part in self.version) if self.version else None,
            "threads": None,
            "flags": trtexec_loader.TRTEXEC_TIMING_FLAGS,
            "includes_transfers": False,  # --noDataTransfers: GPU compute only, never compared with the others
            "model": str(self.model_path),
            "build_command": " ".join(self.build_command) if self.build_command else None,
            "precision_note": self.precision_note,
        }
