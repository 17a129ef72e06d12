"""`engine` stage: the deployable TensorRT engine for a TensorRT target.

1. Pre-flight (no TensorRT needed): ops, Q/DQ zero points, dtypes, tensor-core alignment -> preflight.json;
   anything TensorRT's parser would refuse stops the stage here, with the first problem named.
2. Build where TensorRT is: on the target's host over SSH (the engine is copied back), else here when this
   machine has TensorRT in the target's version range and a GPU, else nowhere: the stage then writes the
   exact command to run on the device (build_on_device.sh, BUILD_ON_DEVICE.md) and says so; a build on a
   laptop still completes.
The timing cache lives in the run folder and seeds the next build.
"""

import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from rich.markup import escape

from pipeline.errors import PipelineError
from pipeline.fileio import atomic_write_json, atomic_write_text
from pipeline.portable.trtexec_loader import trtexec_command
from pipeline.progress import log
from pipeline.runtimes import onnx_fixed_batch
from pipeline.runtimes.tensorrt_preflight import preflight
from pipeline.runtimes.tensorrt_runner import tensorrt_available
from pipeline.stage import Stage, StageOutput


@dataclass(frozen=True)
class EngineConfig:
    target: str
    precision: str
    batch: int
    input_shape: tuple[int, ...]  # C, H, W
    max_batch: int | None = None
    workspace_mb: int | None = None
    dla_core: int | None = None
    gpu_fallback: bool = True
    tensorrt_min: str | None = None
    tensorrt_max: str | None = None
    host: str | None = None
    remote: dict | None = None  # port, python, identity, ssh_options, workdir


class EngineStage(Stage):
    name = "engine"
    version = 1

    def __init__(self, onnx: Path, config: EngineConfig, previous_cache: Path | None = None):
        super().__init__(config)
        self.onnx = Path(onnx)
        self.previous_cache = previous_cache  # the last build's timing cache (the stage folder is replaced)

    def inputs(self) -> dict[str, Path]:
        return {"onnx": self.onnx}

    def run(self, workdir: Path) -> StageOutput:
        config = self.config
        report = preflight(self.onnx, config.precision)
        atomic_write_json(workdir / "preflight.json", report.to_dict())
        log(report.format(limit=10))
        if not report.ok:
            first = report.errors[0]
            raise PipelineError(
                f"engine: {self.onnx.name} has {len(report.errors)} construct(s) TensorRT will refuse, "
                f"first {first.node} ({first.op}): {first.message}; `pipeline check {self.onnx}` lists all"
            )
        cache = workdir / "timing.cache"
        if self.previous_cache is not None and self.previous_cache.is_file():
            shutil.copyfile(self.previous_cache, cache)
        metrics = {
            "target": config.target,
            "precision": config.precision,
            "preflight_errors": 0,
            "preflight_warnings": len(report.warnings),
            "onnx": self.onnx.name,
        }
        artifacts = {"preflight": "preflight.json"}
        if config.host:
            metrics.update(self._build_remotely(workdir))
        else:
            reason = tensorrt_available()
            if reason is None:
                metrics.update(self._build_here(workdir, cache))
            else:
                metrics.update(self._instructions(workdir, reason))
        if not metrics.get("built"):
            artifacts.update(instructions="BUILD_ON_DEVICE.md", script="build_on_device.sh", onnx="model.onnx")
        else:
            artifacts.update(engine="model.engine", stamp="model.engine.json")
            if cache.is_file():
                artifacts["timing_cache"] = "timing.cache"
        return StageOutput(artifacts=artifacts, metrics=metrics)

    def _builder_options(self) -> dict:
        c = self.config
        return {
            "precision": c.precision,
            "batch": c.batch,
            "max_batch": c.max_batch,
            "workspace_mb": c.workspace_mb,
            "dla_core": c.dla_core,
            "gpu_fallback": c.gpu_fallback,
        }

    def _build_here(self, workdir: Path, cache: Path) -> dict:
        from pipeline.runtimes.tensorrt_engine import build_engine_file

        c = self.config
        log(f"engine: building {c.precision} engine here for {c.target}")
        stamp = build_engine_file(
            self.onnx,
            workdir / "model.engine",
            **self._builder_options(),
            timing_cache=cache,
            tensorrt_min=c.tensorrt_min,
            tensorrt_max=c.tensorrt_max,
        )
        log(
            f"engine: built with TensorRT {stamp['tensorrt_version']} on {stamp['gpu_name']} "
            f"(compute {stamp['compute_capability']}) in {stamp['build_seconds']} s"
        )
        return {"built": True, "built_on": "local", "stamp": stamp}

    def _build_remotely(self, workdir: Path) -> dict:
        from pipeline.remote.harness import remote_run
        from pipeline.remote.ssh import SshHost

        c = self.config
        remote = c.remote or {}
        host = SshHost.from_settings(c.host, remote)
        spec = {
            "runtime": "tensorrt",
            "fallback": ["trtexec"],
            "batch": c.batch,
            "input_shape": list(c.input_shape),
            "input_name": onnx_input_name(self.onnx),
            "warmup": 10,
            "runs": 50,
            "rounds": 1,
            "build": self._builder_options(),
        }
        log(f"engine: building on {c.host}")
        fetched = workdir / "fetched"
        try:
            result = remote_run(
                host,
                {"model": self.onnx},
                spec,
                python=remote.get("python", "python3"),
                workdir=remote.get("workdir"),
                fetch_engines=fetched,
            )
        except PipelineError as error:
            if "none of tensorrt, trtexec is installed" not in str(error):
                raise
            return self._instructions(workdir, f"{c.host} has neither TensorRT's Python API nor trtexec")
        engine = fetched / "engines" / "model.engine"
        if not engine.is_file():
            raise PipelineError(f"engine: {c.host} reported a build but no engine came back")
        shutil.move(str(engine), workdir / "model.engine")
        stamp = result["engines"]["model"]
        if Path(f"{fetched}/engines/model.engine.json").is_file():
            shutil.move(f"{fetched}/engines/model.engine.json", workdir / "model.engine.json")
        else:  # trtexec build: stamp from the device facts
            stamp = {**stamp, "tensorrt_version": result["device"].get("tensorrt_version"), "built_by": "trtexec"}
            atomic_write_json(workdir / "model.engine.json", stamp)
        shutil.rmtree(fetched, ignore_errors=True)
        return {
            "built": True,
            "built_on": c.host,
            "stamp": stamp,
            "device": result["device"],
            "latency_ms_on_device": result["models"]["model"]["median_ms"],
        }

    def _instructions(self, workdir: Path, reason: str) -> dict:
        """No TensorRT reachable: the one command to run on the device, written where the user will look."""
        c = self.config
        shutil.copyfile(self.onnx, workdir / "model.onnx")  # the folder is all the device needs
        command = trtexec_command(
            "model.onnx",
            precision=c.precision,
            # trtexec refuses --shapes for a model without dynamic dimensions (NVIDIA/TensorRT#2043): a
            # fixed-batch teacher's engine is built at the batch written in its file
            input_name=None if onnx_fixed_batch(self.onnx) is not None else onnx_input_name(self.onnx),
            input_shape=c.input_shape,
            batch=c.batch,
            runs=200,
            warmup_ms=500,
            engine_path="model.engine",
            times_path="times.json",
            profile_path="profile.json",
            timing_cache="timing.cache",
            workspace_mb=c.workspace_mb,
            dla_core=c.dla_core,
            gpu_fallback=c.gpu_fallback,
            tensorrt_major=_major(c.tensorrt_min),
        )
        command[0] = "trtexec"
        line = " ".join(shlex.quote(part) for part in command)
        atomic_write_text(
            workdir / "build_on_device.sh",
            "#!/bin/sh\n# Build and time the engine on the device: copy this folder there and run it\n"
            f'set -e\ncd "$(dirname "$0")"\n{line}\n',
        )
        (workdir / "build_on_device.sh").chmod(0o755)
        atomic_write_text(
            workdir / "BUILD_ON_DEVICE.md",
            f"""# Engine not built here

Why: {reason}.

Copy this folder to the device (TensorRT {c.tensorrt_min or "any"} to {c.tensorrt_max or "any"}) and run
`./build_on_device.sh`, which is:

    {line}

It builds `model.engine` from `model.onnx` (a copy of `{self.onnx.parent.name}/{self.onnx.name}`) and times it
(`times.json`, per-layer `profile.json`).

or let the pipeline do it over SSH: `pipeline engine --target {c.target} --host user@device`.
""",
        )
        log(
            f"[yellow]engine: not built ({escape(reason)}); the command for the device is in engine/BUILD_ON_DEVICE.md[/yellow]"
        )
        return {"built": False, "reason": reason, "command": line}


def onnx_input_name(path: Path) -> str:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in initializers)


def _major(version: str | None) -> int | None:
    return int(version.split(".")[0]) if version else None
