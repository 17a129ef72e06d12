"""Deployment targets: one TOML file per target in `targets/` (data only; schema in targets/README.md).

Every key is checked for its type and range when the file is read, and unknown keys are errors, so a typo
never silently falls back to a default. A file holding only `alias = "other"` (and a description) names
another target: `jetson` is the Orin Nano.
"""

import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (JetPack 6's Ubuntu 22.04): the same parser, from PyPI
    import tomli as tomllib

from pipeline.errors import PipelineError
from pipeline.versions import tensorrt_accepted, version_in_range, version_tuple

TARGETS_DIR = Path(os.environ.get("PIPELINE_TARGETS_DIR", Path(__file__).resolve().parents[1] / "targets"))
RUNTIMES = {"onnxruntime", "tensorrt"}
DEVICES = {"cpu", "cuda", "jetson"}
PRECISIONS = {"fp32", "fp16", "int8", "binary"}
LOCAL_HOSTS = {None, "", "localhost"}  # anything else, even 127.0.0.1, is reached over SSH


@dataclass(frozen=True)
class TensorRtSettings:
    """[tensorrt]: how engines for this target are built."""

    min_version: str | None = None  # TensorRT versions an engine for this target may be built with (inclusive)
    max_version: str | None = None
    jetpack: str | None = None
    workspace_mb: int | None = None  # builder workspace limit (memory-pool WORKSPACE)
    dla_core: int | None = None  # build for this DLA core (GPU fallback below); None: GPU only
    gpu_fallback: bool = True
    # engines later TensorRT versions load (BuilderFlag.VERSION_COMPATIBLE), or Ampere-and-newer GPUs
    # (HardwareCompatibilityLevel.AMPERE_PLUS): portable, possibly slower (portable/engine_facts.py)
    version_compatible: bool = False
    hardware_compatible: bool = False
    # the (jetpack, tensorrt, dla) combinations the board runs, each checked against NVIDIA's documentation
    # (jetson_releases.py); empty: no such facts (an x86 GPU)
    releases: tuple = ()


@dataclass(frozen=True)
class BenchSettings:
    """[bench]: the timing loop of one round."""

    warmup: int = 20
    runs: int = 200


@dataclass(frozen=True)
class GateTargetSettings:
    """[gate]: this target's `pipeline gate` policy; a flag overrides each, unset ones take GateSettings' defaults."""

    max_regression: float | None = None  # fraction
    rounds: int | None = None
    max_rounds: int | None = None
    runs: int | None = None


@dataclass(frozen=True)
class RemoteSettings:
    """[remote]: how the target's host is reached over SSH."""

    port: int = 22
    python: str = "python3"  # the device's interpreter for the bench script
    workdir: str | None = None  # default: a fresh `mktemp -d` per run, removed afterwards
    identity: str | None = None  # ssh -i
    ssh_options: tuple[str, ...] = ()  # extra `-o Key=Value` options


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    runtime: str  # which Runner measures latency and runs the model: "onnxruntime" or "tensorrt"
    device: str  # "cpu", "cuda" (discrete NVIDIA GPU) or "jetson"
    precision: str = "fp32"  # what `build` deploys unless --precision says otherwise
    precisions: tuple[str, ...] = ()  # what the target accepts; () = only `precision`
    batch: int = 1  # batch size latency is measured at (the engine's optimum)
    max_batch: int | None = None  # engine optimisation profile's upper bound (default: batch)
    input_size: tuple[int, int] | None = None  # (H, W); None keeps the teacher's
    threads: int | None = None  # CPU threads for the runtime (pinned and recorded)
    latency_budget_ms: float | None = None
    latency_reduction: float | None = None  # alternative budget: fraction of the teacher's latency to remove
    power_mode: str | None = None  # Jetson nvpmodel mode the numbers are valid for (recorded and compared)
    host: str | None = None  # "user@host": measure and build over SSH; None / "localhost": on this machine
    # the TOML tables, typed; a later kind of target adds its own table here
    tensorrt: TensorRtSettings = field(default_factory=TensorRtSettings)
    bench: BenchSettings = field(default_factory=BenchSettings)
    gate: GateTargetSettings = field(default_factory=GateTargetSettings)
    remote: RemoteSettings = field(default_factory=RemoteSettings)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def is_remote(self) -> bool:
        return self.host not in LOCAL_HOSTS

    @property
    def allowed_precisions(self) -> tuple[str, ...]:
        return self.precisions or (self.precision,)

    def with_host(self, host: str | None) -> "Target":
        return self if host is None else replace(self, host=host)

    def check_precision(self, precision: str) -> None:
        if precision not in PRECISIONS:
            raise PipelineError(f"unknown precision {precision!r}; choose one of {', '.join(sorted(PRECISIONS))}")
        if precision not in self.allowed_precisions:
            raise PipelineError(
                f"target {self.name} accepts precision {', '.join(self.allowed_precisions)}, not {precision}"
            )

    def accepts_tensorrt(self, version: str) -> bool:
        """In the target's range and, where the file lists the board's releases, one of them (10.3 admits 10.3.x)."""
        trt = self.tensorrt
        return tensorrt_accepted(version, trt.min_version, trt.max_version, trt.releases)


def available_targets() -> list[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob("*.toml"))


def _target_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    return path if path.suffix == ".toml" else TARGETS_DIR / f"{name_or_path}.toml"


def load_target(name_or_path: str, *, _seen: tuple = ()) -> Target:
    path = _target_path(name_or_path)
    if not path.is_file():
        raise PipelineError(f"unknown target {name_or_path!r}; known: {', '.join(available_targets()) or 'none'}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise PipelineError(f"{path} is not valid TOML: {error}") from None
    if "alias" in data:
        extra = set(data) - {"alias", "description"}
        if extra:
            raise PipelineError(
                f"{path}: an alias file holds only alias and description, not {', '.join(sorted(extra))}"
            )
        seen = (*_seen, str(path.resolve()))
        if not isinstance(data["alias"], str) or _target_path(data["alias"]).resolve().__str__() in seen:
            raise PipelineError(f"{path}: alias must name another target (no loops)")
        return load_target(data["alias"], _seen=seen)
    return target_from_dict(data, source=str(path))


# key -> (check, message) for the top-level keys; TABLES below for the tables
def _positive_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _non_negative_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _string(v):
    return isinstance(v, str) and v != ""


def _version(v):
    return isinstance(v, str) and re.fullmatch(r"\d+(\.\d+)*", v) is not None


def _release(v):
    return (
        isinstance(v, dict)
        and set(v) == {"jetpack", "tensorrt", "dla"}
        and _version(v["jetpack"])
        and (_version(v["tensorrt"]) and isinstance(v["dla"], bool))
    )


def _positive_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


TOP_LEVEL = {
    "name": (_string, "a non-empty string"),
    "description": (_string, "a non-empty string"),
    "runtime": (lambda v: v in RUNTIMES, f"one of {sorted(RUNTIMES)}"),
    "device": (lambda v: v in DEVICES, f"one of {sorted(DEVICES)}"),
    "precision": (lambda v: v in PRECISIONS, f"one of {sorted(PRECISIONS)}"),
    "precisions": (
        lambda v: isinstance(v, list) and v and all(p in PRECISIONS for p in v),
        f"a non-empty list drawn from {sorted(PRECISIONS)}",
    ),
    "batch": (_positive_int, "a positive integer"),
    "max_batch": (_positive_int, "a positive integer"),
    "input_size": (
        lambda v: isinstance(v, list) and len(v) == 2 and all(_positive_int(x) for x in v),
        "[height, width] in pixels",
    ),
    "threads": (_positive_int, "a positive integer"),
    "latency_budget_ms": (_positive_number, "a positive number of milliseconds"),
    "latency_reduction": (lambda v: _positive_number(v) and v < 1, "a fraction between 0 and 1"),
    "power_mode": (_string, 'a non-empty string (the nvpmodel mode name, e.g. "15W")'),
    "host": (_string, '"localhost" or "user@host"'),
}
TABLES = {  # TOML table -> (its typed settings, key -> (check, message))
    "tensorrt": (
        TensorRtSettings,
        {
            "min_version": (_version, 'a version such as "10.3"'),
            "max_version": (_version, 'a version such as "10" (any 10.x)'),
            "jetpack": (_version, 'a version such as "6.2"'),
            "workspace_mb": (_positive_int, "a positive integer (MiB)"),
            "dla_core": (_non_negative_int, "a DLA core index (0 or 1)"),
            "gpu_fallback": (lambda v: isinstance(v, bool), "true or false"),
            "version_compatible": (lambda v: isinstance(v, bool), "true or false"),
            "hardware_compatible": (lambda v: isinstance(v, bool), "true or false"),
            "releases": (
                lambda v: isinstance(v, list) and all(_release(r) for r in v),
                'a list of {jetpack = "6.1", tensorrt = "10.3", dla = true} tables',
            ),
        },
    ),
    "bench": (
        BenchSettings,
        {
            "warmup": (_non_negative_int, "a non-negative integer"),
            "runs": (_positive_int, "a positive integer"),
        },
    ),
    "gate": (
        GateTargetSettings,
        {
            "max_regression": (
                lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1,
                "a fraction such as 0.05 (5 %)",
            ),
            "rounds": (_positive_int, "a positive integer"),
            "max_rounds": (_positive_int, "a positive integer"),
            "runs": (_positive_int, "a positive integer"),
        },
    ),
    "remote": (
        RemoteSettings,
        {
            "port": (_positive_int, "a TCP port"),
            "python": (_string, "the device's python command"),
            "workdir": (_string, "a folder on the device"),
            "identity": (_string, "a private key file"),
            "ssh_options": (
                lambda v: isinstance(v, list) and all(_string(x) and "=" in x for x in v),
                'a list of "Key=Value" ssh options',
            ),
        },
    ),
}


def target_from_dict(data: dict, *, source: str = "target") -> Target:
    values: dict = {}
    unknown = []
    for key, value in data.items():
        if key in TABLES:
            if not isinstance(value, dict):
                raise PipelineError(f"{source}: [{key}] must be a table")
            settings_class, keys = TABLES[key]
            table = {}
            for inner, inner_value in value.items():
                if inner not in keys:
                    unknown.append(f"{key}.{inner}")
                    continue
                check, wanted = keys[inner]
                if not check(inner_value):
                    raise PipelineError(f"{source}: {key}.{inner} must be {wanted}, not {inner_value!r}")
                table[inner] = tuple(inner_value) if isinstance(inner_value, list) else inner_value
            values[key] = settings_class(**table)
        elif key in TOP_LEVEL:
            check, wanted = TOP_LEVEL[key]
            if not check(value):
                raise PipelineError(f"{source}: {key} must be {wanted}, not {value!r}")
            values[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise PipelineError(f"{source}: unknown keys {', '.join(sorted(unknown))}")
    for required in ("name", "description", "runtime", "device"):
        if required not in values:
            raise PipelineError(f"{source}: missing required key {required!r}")
    for key in ("input_size", "precisions"):  # TOML lists; the tables' lists became tuples above
        if key in values:
            values[key] = tuple(values[key])
    target = Target(**values)
    _check_consistency(target, source)
    return target


def _check_consistency(target: Target, source: str) -> None:
    if target.precisions and target.precision not in target.precisions:
        raise PipelineError(f"{source}: precision {target.precision} is not in precisions {list(target.precisions)}")
    if target.max_batch is not None and target.max_batch < target.batch:
        raise PipelineError(f"{source}: max_batch ({target.max_batch}) is below batch ({target.batch})")
    if target.latency_budget_ms is not None and target.latency_reduction is not None:
        raise PipelineError(f"{source}: give latency_budget_ms or latency_reduction, not both")
    trt = target.tensorrt
    if target.runtime == "onnxruntime" and (trt.dla_core is not None or trt.workspace_mb is not None):
        raise PipelineError(f'{source}: [tensorrt] settings need runtime = "tensorrt"')
    if trt.hardware_compatible and (target.device == "jetson" or trt.dla_core is not None):
        raise PipelineError(f"{source}: hardware_compatible is for discrete Ampere-or-newer GPUs, not a Jetson or DLA")
    if trt.dla_core is not None and target.device != "jetson":
        raise PipelineError(f'{source}: dla_core is only for Jetson devices (device = "jetson")')
    if (
        trt.min_version
        and trt.max_version
        and version_tuple(trt.min_version)[: len(version_tuple(trt.max_version))] > version_tuple(trt.max_version)
    ):
        raise PipelineError(f"{source}: tensorrt min_version {trt.min_version} is above max_version {trt.max_version}")
    from pipeline.jetson_releases import release_problem

    for release in trt.releases:
        if not version_in_range(release["tensorrt"], trt.min_version, trt.max_version):
            raise PipelineError(f"{source}: release TensorRT {release['tensorrt']} is outside min/max_version")
        problem = release_problem(target.name, release["jetpack"], release["tensorrt"], release["dla"])
        if problem:
            raise PipelineError(f"{source}: {problem}")
