"""`pipeline bundle` / `pipeline verify`: a bundle from a real run folder, and every single-byte change caught."""

import json
import tarfile

import pytest
import torch
from conftest import invoke_cli

from pipeline.bench.stage import BenchStage
from pipeline.budgets import get_budget
from pipeline.bundle.pareto import pareto_front
from pipeline.bundle.verify import verify_bundle
from pipeline.errors import PipelineError
from pipeline.export.stage import ExportConfig, ExportStage
from pipeline.models import create_model
from pipeline.recipes.stage_specs import bench_config
from pipeline.stage import RunFolder
from pipeline.targets import load_target
from pipeline.teacher_spec import TeacherSpec


@pytest.fixture(scope="module")
def bundled(tmp_path_factory):
    """The run folder `pipeline bench --teacher lenet5.pt --arch lenet5 --eval none --budget smoke` writes (its export
    and bench stages, configured as recipes/single_model.py::run_bench_only does), then `pipeline bundle` on it."""
    folder = tmp_path_factory.mktemp("bundle")
    torch.manual_seed(0)
    checkpoint = folder / "lenet5.pt"
    torch.save(create_model("lenet5").state_dict(), checkpoint)
    run = RunFolder(folder / "run")
    spec = TeacherSpec(arch="lenet5")
    run.run(ExportStage({"model": checkpoint}, ExportConfig(eval=None, specs={"model": spec})))  # --eval none
    config = bench_config(load_target("cpu"), get_budget("smoke"), spec.load(checkpoint).preprocess, None)
    run.run(BenchStage({"model": run.artifact("export", "model")}, config))
    assert list(run.manifest["stages"]) == ["export", "bench"]
    made = invoke_cli("bundle", str(run.root), "--json")
    assert made.returncode == 0, made.stderr
    return json.loads(made.stdout)


def test_bundle_holds_what_a_mobile_team_needs(bundled):
    from pathlib import Path

    root = Path(bundled["bundle"])
    manifest = json.loads((root / "manifest.json").read_text())
    model = manifest["models"][0]
    assert model["file"] == "models/model-fp32.onnx" and model["inputs"][0]["name"] == "input"
    assert model["inputs"][0]["shape"][1:] == [1, 28, 28] and model["outputs"][0]["dtype"] == "float32"
    assert model["latency"][0]["where"] == "local" and model["latency"][0]["median_ms"] > 0
    assert manifest["preprocessing"]["input_shape"] == [1, 28, 28] and len(manifest["class_labels"]) == 10
    assert manifest["build"]["teacher_sha256"] and manifest["libraries"]["onnxruntime"]
    assert {"MODEL_CARD.md", "example/infer.py", "reference/input.npy"} <= set(manifest["files"])
    assert "## Input" in (root / "MODEL_CARD.md").read_text()
    with tarfile.open(bundled["archive"]) as tar:
        assert f"{root.name}/manifest.sha256" in tar.getnames()
    report = invoke_cli("verify", bundled["archive"])
    assert report.returncode == 0 and "bundle intact" in report.stdout


def test_verify_catches_every_single_byte_change(bundled, tmp_path):
    import shutil
    from pathlib import Path

    root = Path(bundled["bundle"])
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert len(files) >= 7  # card, example, manifest + sha256, model, reference input + output
    for relative in files:
        copy = tmp_path / f"copy-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(root, copy)
        target = copy / relative
        data = bytearray(target.read_bytes())
        for position in (0, len(data) // 2, len(data) - 1):
            changed = bytearray(data)
            changed[position] ^= 0x01
            target.write_bytes(bytes(changed))
            with pytest.raises(PipelineError):
                verify_bundle(copy)
        target.write_bytes(bytes(data))
        assert verify_bundle(copy)["ok"]  # restored: intact again
        shutil.rmtree(copy)


def test_verify_refuses_added_and_missing_files(bundled, tmp_path):
    import shutil
    from pathlib import Path

    copy = tmp_path / "b"
    shutil.copytree(Path(bundled["bundle"]), copy)
    (copy / "models" / "extra.onnx").write_bytes(b"x")
    with pytest.raises(PipelineError, match="files not in the manifest: models/extra.onnx"):
        verify_bundle(copy)
    (copy / "models" / "extra.onnx").unlink()
    (copy / "example" / "infer.py").unlink()
    with pytest.raises(PipelineError, match="example/infer.py is listed in the manifest but missing"):
        verify_bundle(copy)
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    result = invoke_cli("verify", str(broken))
    assert result.returncode == 2 and result.stderr.startswith("error: broken.tar.gz is not a readable bundle archive")


def test_pareto_front_keeps_only_undominated_points():
    points = [
        {"name": "a", "latency_ms": 1.0, "accuracy": 0.9},
        {"name": "b", "latency_ms": 0.5, "accuracy": 0.8},
        {"name": "c", "latency_ms": 0.8, "accuracy": 0.7},
        {"name": "d", "latency_ms": 2.0, "accuracy": 0.85},
    ]
    assert [p["name"] for p in pareto_front(points)] == ["b", "a"]


def test_a_bundle_from_a_newer_release_is_refused_in_one_line_and_an_older_one_reads(bundled, tmp_path):
    import shutil
    from pathlib import Path

    from pipeline.fileio import sha256_file

    def rewritten(name: str, change) -> Path:
        copy = tmp_path / name
        shutil.copytree(bundled["bundle"], copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        change(manifest)
        (copy / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")  # vouched for again, as written
        (copy / "manifest.sha256").write_text(f"{sha256_file(copy / 'manifest.json')}  manifest.json\n")
        return copy

    newer = rewritten("newer", lambda m: m.update(format="edge-pipeline/bundle-v3", format_version=3))
    with pytest.raises(
        PipelineError,
        match=r"newer edge-pipeline \(bundle format v3; this release reads up to v2\)"
        r": upgrade edge-pipeline",
    ) as refused:
        verify_bundle(newer)
    assert "\n" not in str(refused.value)
    older = rewritten("older", lambda m: m.pop("format_version"))  # as bundles were written before versions
    assert verify_bundle(older)["ok"]


def test_a_version_1_bundle_reads_with_its_latency_as_records(bundled):
    """Bundle format 2 holds the measurement layer's latency records; a v1 manifest's entries are converted."""
    from pathlib import Path

    from pipeline.bundle.bundle import BUNDLE_MIGRATIONS
    from pipeline.measure import LATENCY_RECORD_KEYS

    current = json.loads((Path(bundled["bundle"]) / "manifest.json").read_text())
    assert set(current["models"][0]["latency"][0]) == {"target", *LATENCY_RECORD_KEYS}
    v1_entry = {
        "target": "cpu",
        "median_ms": 0.5,
        "p90_ms": 0.6,
        "p99_ms": 0.7,
        "cv": 0.05,
        "batch": 1,
        "warmup": 2,
        "runs": 20,
        "latency_source": "proxy",
        "proxy_for": "tensorrt",
        "runtime": {"runtime": "onnxruntime", "version": "1.2", "threads": 2},
        "measured_on": None,
    }
    v1 = {**current, "format": "edge-pipeline/bundle-v1", "format_version": 1}
    v1["models"] = [{**current["models"][0], "latency": [v1_entry]}]
    record = BUNDLE_MIGRATIONS[1](v1)["models"][0]["latency"][0]
    assert set(record) == {"target", *LATENCY_RECORD_KEYS}
    assert (record["runtime_requested"], record["runtime_used"], record["runtime_version"]) == (
        "tensorrt",
        "onnxruntime",
        "1.2",
    )
    assert (record["where"], record["median_ms"], record["threads"], record["rounds"]) == ("proxy", 0.5, 2, None)
