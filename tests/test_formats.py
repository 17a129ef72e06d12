"""Format versions: run manifests, stage cache keys, engine stamps and gate baselines carry one; an older record
is migrated or refused in one line that says what to do, and so is a newer one (bundles: tests/test_bundle.py)."""

import json

import pytest

from pipeline.errors import PipelineError
from pipeline.formats import format_fields, read_format
from pipeline.portable.tensorrt_loader import stamp_mismatch
from pipeline.stage import RunFolder

GPU = {"gpu_name": "Orin", "compute_capability": "8.7"}


def test_read_format_migrates_step_by_step_and_refuses_what_it_cannot_read():
    migrations = {
        1: lambda r: {**{k: v for k, v in r.items() if k != "old"}, "renamed": r["old"]},
        2: lambda r: {**r, "added": True},
    }
    record = {**format_fields("thing", 1), "old": 5}
    assert read_format(record, "thing", 3, what="x", fix="f", migrations=migrations) == {
        **format_fields("thing", 3),
        "renamed": 5,
        "added": True,
    }
    unversioned = {"format": "edge-pipeline/thing-v3"}  # written before format_version existed
    assert read_format(unversioned, "thing", 3, what="x", fix="f")["format_version"] == 3
    for record, message in [
        (
            {**format_fields("thing", 1)},
            r"older edge-pipeline \(thing format v1; this release "
            r"reads v3 and cannot convert it\): do this",
        ),
        (
            {**format_fields("thing", 4)},
            r"newer edge-pipeline \(thing format v4; this release "
            r"reads up to v3\): upgrade edge-pipeline",
        ),
        ({"format": "something-else"}, r"not an edge-pipeline thing record .*: do this"),
        ({"format": "edge-pipeline/thing-v3", "format_version": 2}, "not an edge-pipeline"),
        ([1, 2], "not an edge-pipeline thing record"),
    ]:
        with pytest.raises(PipelineError, match=message) as refused:
            read_format(record, "thing", 3, what="x", fix="do this")
        assert "\n" not in str(refused.value)


def test_a_run_folder_carries_its_format_version_and_a_newer_one_is_refused(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.save_manifest()
    written = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert written["format"] == "edge-pipeline/run-v1" and written["format_version"] == 1
    del written["format_version"]  # a run folder from before format versions reads as v1
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(written))
    assert RunFolder(tmp_path / "run").manifest["format_version"] == 1
    (tmp_path / "run" / "manifest.json").write_text(json.dumps({**written, **format_fields("run", 2)}))
    with pytest.raises(PipelineError, match=r"run folder .* newer edge-pipeline \(run format v2"):
        RunFolder(tmp_path / "run")


def test_a_stage_entry_with_another_cache_key_format_runs_again(tmp_path):
    from test_stage import CopyStage

    source = tmp_path / "in.txt"
    source.write_text("hello")
    CopyStage.runs = 0
    RunFolder(tmp_path / "run").run(CopyStage(source))
    manifest_path = tmp_path / "run" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["stages"]["copy"]["key_format_version"] == 1
    RunFolder(tmp_path / "run").run(CopyStage(source))
    assert CopyStage.runs == 1  # same key format: cached
    manifest["stages"]["copy"]["key_format_version"] = 0
    manifest_path.write_text(json.dumps(manifest))
    RunFolder(tmp_path / "run").run(CopyStage(source))
    assert CopyStage.runs == 2


def test_engine_stamps_carry_a_format_version_checked_before_loading():
    stamp = {**format_fields("engine-stamp", 1), "tensorrt_version": "10.3.0", **GPU}
    assert stamp_mismatch(stamp, "10.3.0", GPU) is None
    assert stamp_mismatch({k: v for k, v in stamp.items() if k != "format_version"}, "10.3.0", GPU) is None
    newer = stamp_mismatch({**stamp, **format_fields("engine-stamp", 2)}, "10.3.0", GPU)
    assert "newer edge-pipeline (engine-stamp format v2" in newer
    assert "not an edge-pipeline engine-stamp record" in stamp_mismatch({**stamp, "format": None}, "10.3.0", GPU)


def test_a_gate_baseline_from_a_newer_release_is_refused_before_it_is_used(tmp_path):
    from pipeline.gate.gate import read_baseline

    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({**format_fields("latency-baseline", 2), "model_file": "m.onnx"}))
    with pytest.raises(PipelineError, match=r"newer edge-pipeline \(latency-baseline format v2"):
        read_baseline(path)
    path.write_text(json.dumps({"format": "something/else"}))
    with pytest.raises(PipelineError, match=r"not an edge-pipeline latency-baseline record .*--update-baseline"):
        read_baseline(path)
