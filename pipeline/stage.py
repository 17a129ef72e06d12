"""The Stage contract and the run folder that executes stages with caching, resume and atomic writes.

A stage turns input files + a typed config into artifacts in its own sub-folder and one manifest
entry (input hashes, config, metrics, wall time, library versions). Re-running skips a stage whose
cache key (stage version + config + input hashes) is unchanged and whose artifacts are intact.
A stage works in `.partial-<name>/`, which survives an interruption so that long training loops
can resume from their own checkpoints there; it is renamed into place only when the stage succeeds.
"""

import copy
import dataclasses
import json
import os
import platform
import shutil
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline import __version__, failpoints
from pipeline.errors import PipelineError
from pipeline.fileio import (
    atomic_write_json,
    atomic_write_text,
    sha256_file,
    sha256_json,
)
from pipeline.formats import format_fields, read_format
from pipeline.process_memory import peak_rss_mb
from pipeline.progress import log

MANIFEST_KIND, MANIFEST_VERSION = "run", 1
# How a stage's cache key is computed (v1: sha256 of stage name, stage version, config and input hashes). Each
# manifest entry records it; an entry with another key format is not current, so the stage runs again.
CACHE_KEY_VERSION = 1
# field metadata: leave the field out of the cache key while it has its default value, so that adding an
# option does not make every existing run folder redo its stages
OPTIONAL_IN_KEY = "optional_in_key"


def optional_field(default=None):
    return field(default=default, metadata={OPTIONAL_IN_KEY: True})


@dataclass
class StageOutput:
    artifacts: dict[str, str]  # artifact name -> file name inside the stage folder
    metrics: dict[str, Any] = field(default_factory=dict)


class Stage(ABC):
    name: str = ""
    version: int = 1  # bump when a code change alters what the stage produces

    def __init__(self, config):
        self.config = config

    @abstractmethod
    def inputs(self) -> dict[str, Path]:
        """Files whose content decides this stage's output (hashed into the cache key)."""

    @abstractmethod
    def run(self, workdir: Path) -> StageOutput:
        """Do the work, writing artifacts into `workdir`; may resume from files already there."""

    def config_dict(self) -> dict:
        if not dataclasses.is_dataclass(self.config):
            return dict(self.config)
        return _key_dict(self.config)


def _key_dict(value):
    """`dataclasses.asdict`, except that an option added later and left at its default is left out, at any
    depth (a stage config's TeacherSpec included), so old run folders keep their keys."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            spec.name: _key_dict(getattr(value, spec.name))
            for spec in dataclasses.fields(value)
            if not (spec.metadata.get(OPTIONAL_IN_KEY) and getattr(value, spec.name) == spec.default)
        }
    if isinstance(value, dict):
        return {key: _key_dict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_key_dict(item) for item in value)
    return copy.deepcopy(value)


def library_versions() -> dict[str, str]:
    versions = {"edge-pipeline": __version__, "python": platform.python_version()}
    for module in ("torch", "torchvision", "onnx", "onnxruntime", "numpy"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # a missing optional library is simply not recorded
            pass
    return versions


class RunFolder:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.manifest_path = self.root / "manifest.json"
        if self.root.exists() and not self.root.is_dir():
            raise PipelineError(f"run folder {self.root} exists and is not a directory")
        self.created = not self.root.exists()  # `--plan` removes a folder it made and left empty
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest = self._read_manifest()

    @contextmanager
    def lock(self):
        """One pipeline process per run folder: a second one fails at once instead of interleaving writes.
        flock is released by the OS when the holder dies, so a killed run never leaves a stale lock."""
        import fcntl

        handle = open(self.root / ".lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise PipelineError(
                f"run folder {self.root} is in use by {holder}: wait for it to finish, or give another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pipeline process {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def reload(self) -> None:
        self.manifest = self._read_manifest()

    def _read_manifest(self) -> dict:
        if not self.manifest_path.exists():
            return {**format_fields(MANIFEST_KIND, MANIFEST_VERSION), "created": _now(), "stages": {}}
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except ValueError as error:
            raise PipelineError(
                f"{self.manifest_path} is not valid JSON ({error}); delete the run folder or pick another --out"
            ) from None
        manifest = read_format(
            manifest,
            MANIFEST_KIND,
            MANIFEST_VERSION,
            what=f"run folder {self.root}",
            fix="give another --out (or delete the folder) to start a new run",
        )
        problem = manifest_problem(manifest)
        if problem:
            raise PipelineError(
                f"{self.manifest_path} was edited by hand or damaged: {problem}; restore it, or delete "
                "the run folder (or give another --out) to start again"
            )
        return manifest

    def save_manifest(self) -> None:
        from pipeline import distributed

        if distributed.is_main():  # under torchrun only rank 0 writes the run folder
            atomic_write_json(self.manifest_path, self.manifest)

    def set_run_info(self, **info) -> None:
        self.manifest.update(info)
        self.save_manifest()

    def entry(self, name: str) -> dict | None:
        return self.manifest["stages"].get(name)

    def artifact(self, stage_name: str, artifact_name: str) -> Path:
        entry = self.entry(stage_name)
        if entry is None or entry.get("status") != "done" or artifact_name not in entry["artifacts"]:
            raise PipelineError(f"stage {stage_name!r} has not finished in {self.root}; run it first")
        return self.root / entry["artifacts"][artifact_name]["path"]

    def changed_artifacts(self, name: str) -> list[str]:
        """The finished stage's files that are missing or differ from the hashes recorded when it wrote them."""
        entry = self.entry(name) or {}
        return [
            artifact["path"]
            for artifact in entry.get("artifacts", {}).values()
            if not (self.root / artifact["path"]).is_file()
            or sha256_file(self.root / artifact["path"]) != artifact["sha256"]
        ]

    def _is_current(self, name: str, key: str) -> bool:
        entry = self.entry(name)
        if not entry or entry.get("status") != "done":
            return False
        if entry.get("key_format_version", 1) != CACHE_KEY_VERSION:
            log(
                f"[yellow]{name}: its cache key was written in format v{entry.get('key_format_version', 1)}, this "
                f"release uses v{CACHE_KEY_VERSION}; running {name} again[/yellow]"
            )
            return False
        if entry.get("key") != key:
            return False
        changed = self.changed_artifacts(name)
        if changed:
            log(
                f"[yellow]{name}: {', '.join(changed)} changed or went missing since the stage wrote it "
                f"(edited by hand?); running {name} again[/yellow]"
            )
            return False
        return True

    def run(self, stage: Stage, *, force: bool = False) -> dict:
        inputs = {name: Path(path) for name, path in stage.inputs().items()}
        for name, path in inputs.items():
            if not path.is_file():
                raise PipelineError(f"stage {stage.name}: input {name} ({path}) does not exist")
        input_hashes = {name: sha256_file(path) for name, path in inputs.items()}
        config = stage.config_dict()
        key = sha256_json({"stage": stage.name, "version": stage.version, "config": config, "inputs": input_hashes})
        from pipeline import distributed

        # under torchrun, rank 0 decides; the other ranks work in a private sub-folder that is discarded
        if distributed.broadcast_object(not force and self._is_current(stage.name, key)):
            log(f"[dim]{stage.name}: up to date, skipped[/dim]")
            return self.entry(stage.name)

        workdir = self._prepare_workdir(stage.name, key, fresh=force) if distributed.is_main() else None
        failpoints.hit(f"{stage.name}:started")
        distributed.barrier()
        if not distributed.is_main():
            workdir = self.root / f".partial-{stage.name}" / f"rank-{distributed.rank()}"
            workdir.mkdir(parents=True, exist_ok=True)
        log(f"[bold]{stage.name}[/bold]: running")
        started, start_clock = _now(), time.monotonic()
        output = stage.run(workdir)
        distributed.barrier()
        if not distributed.is_main():
            distributed.barrier()  # wait for rank 0 to publish the stage, then read what it wrote
            self.manifest = self._read_manifest()
            return self.entry(stage.name)
        for rank_dir in workdir.glob("rank-*"):
            shutil.rmtree(rank_dir)
        wall_s = round(time.monotonic() - start_clock, 2)
        for name, filename in output.artifacts.items():
            if not (workdir / filename).is_file():
                raise RuntimeError(f"stage {stage.name} promised artifact {name} ({filename}) but did not write it")
        failpoints.hit(f"{stage.name}:written")  # everything written, nothing published yet

        final_dir = self.root / stage.name
        self._swap_into_place(workdir, final_dir)
        failpoints.hit(f"{stage.name}:swapped")  # the folder is in place, the manifest does not know it yet
        artifacts = {
            name: {
                "path": f"{stage.name}/{filename}",
                "sha256": sha256_file(final_dir / filename),
                "bytes": (final_dir / filename).stat().st_size,
            }
            for name, filename in output.artifacts.items()
        }
        entry = {
            "status": "done",
            "key": key,
            "key_format_version": CACHE_KEY_VERSION,
            "stage_version": stage.version,
            "config": config,
            "inputs": {name: {"path": str(path), "sha256": input_hashes[name]} for name, path in inputs.items()},
            "artifacts": artifacts,
            "metrics": output.metrics,
            "wall_s": wall_s,
            "peak_rss_mb": peak_rss_mb(),  # the process's peak so far: the stage that raised it needed it
            "started_at": started,
            "finished_at": _now(),
            "versions": library_versions(),
        }
        self.manifest["stages"][stage.name] = entry
        self.save_manifest()
        distributed.barrier()
        log(f"{stage.name}: done in {wall_s:.1f} s")
        return entry

    def _prepare_workdir(self, name: str, key: str, *, fresh: bool) -> Path:
        """Keep an interrupted attempt's folder when it was for the same key, so the stage can resume."""
        workdir = self.root / f".partial-{name}"
        key_file = workdir / ".key"
        if workdir.exists() and (fresh or not key_file.exists() or key_file.read_text() != key):
            shutil.rmtree(workdir)
        if workdir.exists():
            log(f"{name}: resuming an interrupted attempt")
            for leftover in workdir.rglob(".*.tmp"):  # an atomic write that was cut off: never renamed, never used
                leftover.unlink()
        workdir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(key_file, key)
        return workdir

    def _swap_into_place(self, workdir: Path, final_dir: Path) -> None:
        (workdir / ".key").unlink(missing_ok=True)
        old = final_dir.with_name(f".old-{final_dir.name}")
        if old.exists():
            shutil.rmtree(old)
        if final_dir.exists():
            final_dir.rename(old)
            failpoints.hit(f"{final_dir.name}:half-swapped")  # neither the old nor the new folder is in place
        workdir.rename(final_dir)
        if old.exists():
            shutil.rmtree(old)


def manifest_problem(manifest: dict) -> str | None:
    """What makes a manifest unusable (wrong types, artifact paths outside the run folder), or None."""
    stages = manifest.get("stages")
    if not isinstance(stages, dict):
        return "'stages' is not a table of stages"
    for name, entry in stages.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("artifacts", {}), dict):
            return f"the entry of stage {name!r} is not a table with 'artifacts'"
        for artifact_name, artifact in entry.get("artifacts", {}).items():
            if (
                not isinstance(artifact, dict)
                or not isinstance(artifact.get("path"), str)
                or not isinstance(artifact.get("sha256"), str)
            ):
                return f"artifact {artifact_name!r} of stage {name!r} lacks a path or a sha256"
            path = Path(artifact["path"])
            if path.is_absolute() or ".." in path.parts:
                return (
                    f"artifact {artifact_name!r} of stage {name!r} points outside the run folder ({artifact['path']})"
                )
    return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
