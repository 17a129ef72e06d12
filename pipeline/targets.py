"""Deployment targets: one TOML file per target in `targets/` (data only; see targets/README.md)."""

import os
from dataclasses import dataclass, fields
from pathlib import Path

import tomllib

from pipeline.errors import PipelineError

TARGETS_DIR = Path(os.environ.get("PIPELINE_TARGETS_DIR", Path(__file__).resolve().parents[1] / "targets"))
RUNTIMES = {"onnxruntime", "tensorrt"}
PRECISIONS = {"fp32", "fp16", "int8", "binary"}


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    runtime: str  # which Runner measures latency: "onnxruntime" or "tensorrt"
    device: str  # "cpu", "cuda" or "jetson"
    precision: str = "fp32"
    batch: int = 1
    input_size: tuple[int, int] | None = None  # (H, W); None keeps the teacher's
    threads: int | None = None  # CPU threads for the runtime (pinned and recorded)
    latency_budget_ms: float | None = None
    tensorrt_min: str | None = None  # TensorRT version range an engine for this target may be built with
    tensorrt_max: str | None = None
    host: str = "localhost"  # where latency is measured; "user@host" means over SSH
    warmup: int = 20
    runs: int = 200

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def available_targets() -> list[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob("*.toml"))


def load_target(name_or_path: str) -> Target:
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = TARGETS_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise PipelineError(f"unknown target {name_or_path!r}; known: {', '.join(available_targets()) or 'none'}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise PipelineError(f"{path} is not valid TOML: {error}") from None
    return target_from_dict(data, source=str(path))


def target_from_dict(data: dict, *, source: str = "target") -> Target:
    flat = dict(data)
    tensorrt = flat.pop("tensorrt", {}) or {}
    bench = flat.pop("bench", {}) or {}
    for key, table in (("tensorrt", tensorrt), ("bench", bench)):
        if not isinstance(table, dict):
            raise PipelineError(f"{source}: [{key}] must be a table")
    unknown_trt = set(tensorrt) - {"min_version", "max_version"}
    unknown_bench = set(bench) - {"warmup", "runs"}
    flat.update({"tensorrt_min": tensorrt.get("min_version"), "tensorrt_max": tensorrt.get("max_version")})
    flat.update(bench)
    known = {f.name for f in fields(Target)}
    unknown = (set(flat) - known) | {f"tensorrt.{k}" for k in unknown_trt} | {f"bench.{k}" for k in unknown_bench}
    if unknown:
        raise PipelineError(f"{source}: unknown keys {', '.join(sorted(unknown))}")
    for required in ("name", "description", "runtime", "device"):
        if required not in flat:
            raise PipelineError(f"{source}: missing required key {required!r}")
    if flat["runtime"] not in RUNTIMES:
        raise PipelineError(f"{source}: runtime must be one of {sorted(RUNTIMES)}, not {flat['runtime']!r}")
    if flat.get("precision", "fp32") not in PRECISIONS:
        raise PipelineError(f"{source}: precision must be one of {sorted(PRECISIONS)}")
    if flat.get("input_size") is not None:
        size = flat["input_size"]
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
            raise PipelineError(f"{source}: input_size must be [height, width]")
        flat["input_size"] = tuple(size)
    if not isinstance(flat.get("batch", 1), int) or flat.get("batch", 1) < 1:
        raise PipelineError(f"{source}: batch must be a positive integer")
    return Target(**flat)
