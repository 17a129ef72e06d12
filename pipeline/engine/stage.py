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
from pipeline.jetson_releases import dla_refusal
from pipeline.portable.engine_precision import engine_precision
from pipeline.portable.errors import BenchError
from pipeline.portable.tensorrt_loader import onnx_precision
from pipeline.portable.trtexec_loader import banner_number, trtexec_build_command, trtexec_time_command
from pipeline.progress import log
from pipeline.runtimes import trtexec_input_name
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
    releases: tuple = ()  # the board's (jetpack, tensorrt, dla) combinations, from the target file
    version_compatible: bool = False  # portable engines (portable/engine_facts.py)
    hardware_compatible: bool = False


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
        refusal = dla_refusal(config.target, config.releases, config.dla_core, config.tensorrt_min, config.tensorrt_max)
        if refusal:  # before any build: no device is asked to try what NVIDIA says cannot exist
            raise PipelineError(f"engine: {refusal}")
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
            "version_compatible": c.version_compatible,
            "hardware_compatible": c.hardware_compatible,
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
            "input_names": {"model": trtexec_input_name(self.onnx)},  # trtexec's shapes (None: a fixed batch)
            "warmup": 10,
            "runs": 50,
            "rounds": 1,
            "build": {**self._builder_options(), "deliverable": True},  # never an engine in another precision
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
        else:  # a trtexec build: the device script's stamp (its version read from trtexec's own banner)
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
        """No TensorRT reachable: the script to run on the device, written where the user will look. Which build
        command it runs is decided there, by the device's own trtexec version (TensorRT 11 has no precision
        flags), among those the target's version range allows."""
        c = self.config
        shutil.copyfile(self.onnx, workdir / "model.onnx")  # the folder is all the device needs
        commands = device_commands(self.onnx, c)
        atomic_write_text(workdir / "build_on_device.sh", device_script(commands, c))
        (workdir / "build_on_device.sh").chmod(0o755)
        listed = "\n".join(f"    # {name}\n    {line}" for name, line in commands.items())
        atomic_write_text(
            workdir / "BUILD_ON_DEVICE.md",
            f"""# Engine not built here

Why: {reason}.

Copy this folder to the device (TensorRT {c.tensorrt_min or "any"} to {c.tensorrt_max or "any"}) and run
`./build_on_device.sh`. It reads the TensorRT version from the device's trtexec banner and runs the build for
that major (TensorRT 11 takes the precision from the ONNX itself), then times the engine:

{listed}

It builds `model.engine` from `model.onnx` (a copy of `{self.onnx.parent.name}/{self.onnx.name}`) and times it
(`times.json`, per-layer `profile.json`).

or let the pipeline do it over SSH: `pipeline engine --target {c.target} --host user@device`.
""",
        )
        log(
            f"[yellow]engine: not built ({escape(reason)}); the command for the device is in engine/BUILD_ON_DEVICE.md[/yellow]"
        )
        return {"built": False, "reason": reason, "command": "./build_on_device.sh", "commands": commands}


KNOWN_MAJORS = (8, 10, 11)  # the TensorRT majors with a trtexec for engines (9.x was an LLM-only release)
TRTEXEC_VARIABLE = '"$TRTEXEC"'  # the script finds trtexec on PATH or where JetPack installs it


def device_commands(onnx: Path, config: EngineConfig) -> dict[str, str]:
    """{"build_tensorrt_<major>": the trtexec build line, or "refused: <why>", ..., "time": the timing line} for
    each TensorRT major the target allows; the lines name `model.onnx` and `model.engine` in the folder."""
    low = _major(config.tensorrt_min) or min(KNOWN_MAJORS)
    high = _major(config.tensorrt_max) or max(KNOWN_MAJORS)
    input_name, stored = trtexec_input_name(onnx), onnx_precision(str(onnx))
    commands = {}
    for major in (m for m in KNOWN_MAJORS if low <= m <= high):
        try:
            decided = engine_precision(major, config.precision, stored)
        except BenchError as error:
            commands[f"build_tensorrt_{major}"] = f"refused: {error}"
            continue
        command = trtexec_build_command(
            "model.onnx",
            "model.engine",
            tensorrt_major=major,
            precision=decided,
            input_name=input_name,
            input_shape=config.input_shape,
            batch=config.batch,
            max_batch=config.max_batch,
            timing_cache="timing.cache",
            workspace_mb=config.workspace_mb,
            dla_core=config.dla_core,
            gpu_fallback=config.gpu_fallback,
            layer_info="model.engine.layers.json",
        )
        commands[f"build_tensorrt_{major}"] = _line(command)
    timing = trtexec_time_command(
        "model.engine",
        input_name=input_name,
        input_shape=config.input_shape,
        batch=config.batch,
        runs=200,
        warmup_ms=500,
        times_path="times.json",
        profile_path="profile.json",
        dla_core=config.dla_core,
    )
    commands["time"] = _line(timing)
    return commands


def _line(command: list[str]) -> str:
    return " ".join([TRTEXEC_VARIABLE, *(shlex.quote(part) for part in command[1:])])


def device_script(commands: dict[str, str], config: EngineConfig) -> str:
    """A POSIX sh script: the banner's `[TensorRT vN]` (N = major*10000 + minor*100 + patch from 10 on,
    major*1000 + ... before) picks the build line of the device's major, refusals and versions outside the
    target's range stop with one line, then the engine is timed."""
    wanted = f"TensorRT {config.tensorrt_min or 'any'} to {config.tensorrt_max or 'any'}"
    branches = []
    for major in sorted(KNOWN_MAJORS, reverse=True):
        floor = banner_number(major, 0, 0)
        line = commands.get(f"build_tensorrt_{major}")
        if line is None:
            body = f'echo "build_on_device.sh: this device has TensorRT v$version; {config.target} wants {wanted}" >&2; exit 1'
        elif line.startswith("refused: "):
            body = f"echo {shlex.quote('build_on_device.sh: ' + line[len('refused: ') :])} >&2; exit 1"
        else:
            body = line
        branches.append((floor, body))
    lines = [
        "#!/bin/sh",
        "# Build and time the engine on the device: copy this folder there and run it. The device's own trtexec",
        "# decides the build command: TensorRT 11 has no precision flags (the ONNX holds the precision).",
        "set -e",
        'cd "$(dirname "$0")"',
        'TRTEXEC="${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}"',
        "version=$(\"$TRTEXEC\" --help 2>&1 | sed -n 's/.*\\[TensorRT v\\([0-9]*\\)\\].*/\\1/p' | head -n 1)",
        'if [ -z "$version" ]; then echo "build_on_device.sh: no TensorRT version in $TRTEXEC\'s banner" >&2; exit 1; fi',
    ]
    low, high = _banner_number(config.tensorrt_min, 0), _banner_number(config.tensorrt_max, 99)
    if low is not None or high is not None:  # the target's whole range, not only its majors
        outside = " || ".join(
            part
            for part in (f'[ "$version" -lt {low} ]' if low else "", f'[ "$version" -gt {high} ]' if high else "")
            if part
        )
        lines.append(
            f'if {outside}; then echo "build_on_device.sh: this device has TensorRT v$version; '
            f'{config.target} wants {wanted}" >&2; exit 1; fi'
        )
    for index, (floor, body) in enumerate(branches):
        keyword = "if" if index == 0 else "elif"
        lines += [f'{keyword} [ "$version" -ge {floor} ]; then', f"  {body}"]
    lines += [
        "else",
        f'  echo "build_on_device.sh: TensorRT v$version is older than 8; {config.target} wants {wanted}" >&2; exit 1',
        "fi",
        commands["time"],
        "",
    ]
    return "\n".join(lines)


def _banner_number(version: str | None, fill: int) -> int | None:
    """A version as trtexec's banner writes it, its missing parts `fill`ed: "10.3" is 100300 as a minimum; "11" is
    119999 as a maximum."""
    if not version:
        return None
    parts = [int(p) for p in version.split(".")[:3]]
    return banner_number(*parts, *[fill] * (3 - len(parts)))


def _major(version: str | None) -> int | None:
    return int(version.split(".")[0]) if version else None
