import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.fileio import atomic_write_bytes
from pipeline.process_memory import peak_rss_mb
from pipeline.stage import RunFolder, Stage, StageOutput


@dataclass(frozen=True)
class CopyConfig:
    suffix: str = "!"


class CopyStage(Stage):
    """Toy stage: copies its input with a suffix; counts how often it really ran."""

    name = "copy"
    runs = 0

    def __init__(self, source: Path, config=CopyConfig(), fail: bool = False):
        super().__init__(config)
        self.source, self.fail = source, fail

    def inputs(self):
        return {"source": self.source}

    def run(self, workdir: Path) -> StageOutput:
        CopyStage.runs += 1
        (workdir / "scratch.txt").write_text("partial work")
        if self.fail:
            raise KeyboardInterrupt  # what Ctrl-C looks like inside a stage
        (workdir / "out.txt").write_text(self.source.read_text() + self.config.suffix)
        return StageOutput({"out": "out.txt"}, {"length": len(self.source.read_text())})


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("hello")
    CopyStage.runs = 0
    return path


def test_runs_once_then_skips(tmp_path, source):
    run = RunFolder(tmp_path / "run")
    entry = run.run(CopyStage(source))
    assert (tmp_path / "run/copy/out.txt").read_text() == "hello!"
    assert entry["metrics"] == {"length": 5} and entry["status"] == "done"
    assert set(entry["versions"]) >= {"torch", "python", "edge-pipeline"}
    assert 10 < entry["peak_rss_mb"] <= peak_rss_mb()  # the process's peak (monotonic) when the stage ended
    RunFolder(tmp_path / "run").run(CopyStage(source))
    assert CopyStage.runs == 1
    manifest = json.loads((tmp_path / "run/manifest.json").read_text())
    assert manifest["stages"]["copy"]["inputs"]["source"]["sha256"]


def test_changed_config_input_or_artifact_reruns(tmp_path, source):
    run = RunFolder(tmp_path / "run")
    run.run(CopyStage(source))
    run.run(CopyStage(source, CopyConfig("?")))
    assert CopyStage.runs == 2 and (tmp_path / "run/copy/out.txt").read_text() == "hello?"
    source.write_text("changed")
    run.run(CopyStage(source, CopyConfig("?")))
    assert CopyStage.runs == 3
    (tmp_path / "run/copy/out.txt").write_text("tampered")
    run.run(CopyStage(source, CopyConfig("?")))
    assert CopyStage.runs == 4 and (tmp_path / "run/copy/out.txt").read_text() == "changed?"


def test_interrupted_stage_keeps_previous_result_and_partial_work(tmp_path, source):
    run = RunFolder(tmp_path / "run")
    run.run(CopyStage(source))
    before = (tmp_path / "run/manifest.json").read_text()
    with pytest.raises(KeyboardInterrupt):
        run.run(CopyStage(source, CopyConfig("?"), fail=True))
    assert (tmp_path / "run/copy/out.txt").read_text() == "hello!"  # finished output untouched
    assert (tmp_path / "run/manifest.json").read_text() == before
    assert (tmp_path / "run/.partial-copy/scratch.txt").exists()  # kept for resuming the same work
    run.run(CopyStage(source, CopyConfig("?")))
    assert not (tmp_path / "run/.partial-copy").exists()
    assert (tmp_path / "run/copy/out.txt").read_text() == "hello?"


def test_partial_work_for_other_config_is_discarded(tmp_path, source):
    run = RunFolder(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        run.run(CopyStage(source, CopyConfig("a"), fail=True))
    (tmp_path / "run/.partial-copy/stale.txt").write_text("x")
    run.run(CopyStage(source, CopyConfig("b")))
    assert not (tmp_path / "run/copy/stale.txt").exists()


def test_missing_input_and_bad_manifest_are_clear_errors(tmp_path, source):
    with pytest.raises(PipelineError, match="does not exist"):
        RunFolder(tmp_path / "run").run(CopyStage(tmp_path / "nope.txt"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad/manifest.json").write_text("{not json")
    with pytest.raises(PipelineError, match="not valid JSON"):
        RunFolder(tmp_path / "bad")
    with pytest.raises(PipelineError, match="has not finished"):
        RunFolder(tmp_path / "run").artifact("distill", "student")


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "file.bin"
    atomic_write_bytes(path, b"old")

    def exploding_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", exploding_fsync)
    with pytest.raises(OSError):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]  # no temp file left behind
