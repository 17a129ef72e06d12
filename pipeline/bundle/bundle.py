"""`pipeline bundle RUN`: what a mobile team takes away, in one folder and one .tar.gz.

    <name>/models/<role>-<precision>.onnx     the handed-on model (and its fp32 form when it was quantised)
    <name>/engines/<target>/model.engine(.json) TensorRT engines with their version/GPU stamps, when built
    <name>/reference/                         an input and each model's output on it (verify's parity check)
    <name>/example/infer.py                   minimal onnxruntime inference, reading the manifest
    <name>/MODEL_CARD.md, pareto.png          written from the manifest
    <name>/manifest.json, manifest.sha256     every file's sha256; I/O names, shapes, dtypes; preprocessing;
                                              class labels; accuracy; latency per target with the harness
                                              settings; the build command; library versions; teacher hash
Everything is written into a temporary folder and renamed into place, so an interrupted bundle leaves nothing
that looks complete.
"""

import json
import shutil
import tarfile
import time
from pathlib import Path

import numpy as np

from pipeline.bundle.card import model_card
from pipeline.bundle.pareto import pareto_points, plot_pareto
from pipeline.errors import PipelineError
from pipeline.fileio import atomic_write_json, atomic_write_text, sha256_file
from pipeline.formats import format_fields
from pipeline.measure import LATENCY_RECORD_KEYS
from pipeline.run_view import RunView
from pipeline.runtimes import OnnxRuntimeRunner
from pipeline.stage import RunFolder, library_versions

BUNDLE_KIND, BUNDLE_VERSION = "bundle", 2  # 2: latency entries are the measurement layer's records
EXAMPLE = Path(__file__).with_name("example_infer.py")


def class_labels(manifest: dict) -> list[str]:
    count = manifest.get("num_classes") or 0
    evaluation = manifest.get("eval")
    if evaluation == "fmnist":
        from pipeline.data.fashion_mnist import CLASSES

        if len(CLASSES) == count:
            return list(CLASSES)
    elif evaluation and Path(evaluation).is_dir():
        names = sorted(p.name for p in Path(evaluation).iterdir() if p.is_dir())
        if len(names) == count:
            return names
    return [f"class_{i}" for i in range(count)]


def _classes(path: Path) -> int:
    outputs = onnx_io(path)["outputs"][0]["shape"]
    return outputs[-1] if isinstance(outputs[-1], int) else 0


def onnx_io(path: Path) -> dict:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}

    def describe(values):
        return [
            {
                "name": v.name,
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
            }
            for v in values
        ]

    return {
        "inputs": describe([i for i in model.graph.input if i.name not in initializers]),
        "outputs": describe(model.graph.output),
    }


def _models(run: RunFolder) -> list[dict]:
    """The handed-on model (and, when quantised, its fp32 form) with the bench figures that describe it."""
    handed_on = RunView(run).handed_on()
    models = [
        {"source": handed_on.onnx, "role": handed_on.role, "precision": handed_on.precision, "bench": handed_on.bench}
    ]
    if handed_on.onnx != handed_on.fp32_onnx:
        models.append(
            {
                "source": handed_on.fp32_onnx,
                "role": handed_on.role,
                "precision": "fp32",
                "accuracy": handed_on.accuracy_fp32,
            }
        )
    return models


def _latency_entry(bench: dict, target: dict) -> dict:
    latency = bench["latency"]
    missing = [key for key in LATENCY_RECORD_KEYS if key not in latency]
    if missing:
        raise PipelineError(
            f"the run's bench figures were written by an older edge-pipeline (no {missing[0]}): "
            "run the same build again to re-measure them, then bundle"
        )
    return {"target": target.get("name"), **{key: latency[key] for key in LATENCY_RECORD_KEYS}}


def _v1_latency_as_records(manifest: dict) -> dict:
    """Bundle format 1 -> 2: v1 latency entries held the bench figures under their old names; a fact v1 did not
    keep (rounds, flops, ...) is null."""
    models = []
    for model in manifest.get("models", []):
        records = []
        for old in model.get("latency", []):
            runtime, measured = old.get("runtime") or {}, old.get("measured_on") or {}
            where = old.get("latency_source")
            record = dict.fromkeys(LATENCY_RECORD_KEYS)
            record.update(
                runtime_requested=old.get("proxy_for") if where == "proxy" else runtime.get("runtime"),
                runtime_used=measured.get("runtime") or runtime.get("runtime"),
                runtime_version=measured.get("version") or runtime.get("version"),
                where=where,
                host=measured.get("host"),
                batch=old.get("batch"),
                threads=runtime.get("threads"),
                **{key: old.get(key) for key in ("median_ms", "p90_ms", "p99_ms", "cv")},
            )
            records.append({"target": old.get("target"), **record})
        models.append({**model, "latency": records})
    return {**manifest, "models": models}


BUNDLE_MIGRATIONS = {1: _v1_latency_as_records}


def make_bundle(run_root: Path, out: Path | None = None) -> dict:
    run = RunFolder(run_root) if (Path(run_root) / "manifest.json").is_file() else None
    if run is None:
        raise PipelineError(f"{run_root} is not a run folder (no manifest.json)")
    manifest = run.manifest
    changed = [path for stage in manifest["stages"] for path in run.changed_artifacts(stage)]
    if changed:
        raise PipelineError(
            f"{', '.join(changed)} in {run_root} changed since the pipeline wrote it (edited by hand?): "
            "the bundle would not match the recorded accuracy and latency; run the same build again "
            "to redo the affected stages"
        )
    name = Path(run_root).resolve().name
    out = Path(out) if out else Path(run_root) / "bundle"
    final, archive = out / name, out / f"{name}.tar.gz"
    staging = out / f".partial-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "models").mkdir(parents=True)
    models = _models(run)
    labels = class_labels({**manifest, "num_classes": manifest.get("num_classes") or _classes(models[0]["source"])})
    preprocess = dict(manifest.get("preprocess") or {})
    if not preprocess:  # `pipeline bench` runs record no build info: the ONNX file's own metadata says it
        from pipeline.preprocess import preprocess_from_onnx

        preprocess = preprocess_from_onnx(models[0]["source"], None).to_dict()
    preprocess["input_shape"] = [preprocess["channels"], preprocess["height"], preprocess["width"]]
    reference_input = np.random.default_rng(0).standard_normal((2, *preprocess["input_shape"])).astype(np.float32)
    (staging / "reference").mkdir()
    np.save(staging / "reference" / "input.npy", reference_input)
    entries = []
    for model in models:
        filename = f"models/{model['role']}-{model['precision']}.onnx"
        shutil.copyfile(model["source"], staging / filename)
        with OnnxRuntimeRunner(staging / filename) as runner:  # what `pipeline verify` reruns
            output = runner.infer(reference_input)
        reference = f"reference/{model['role']}-{model['precision']}-output.npy"
        np.save(staging / reference, output.astype(np.float32))
        bench = model.get("bench") or {}
        entry = {
            "file": filename,
            "role": model["role"],
            "precision": model["precision"],
            **onnx_io(staging / filename),
            "reference_output": reference,
            "accuracy": {},
            "latency": [],
        }
        if bench.get("accuracy") is not None:
            entry["accuracy"][bench.get("eval_dataset", "eval")] = bench["accuracy"]
        elif model.get("accuracy") is not None:  # measured by the quantize stage on the same labelled set
            dataset = next(
                (
                    b.get("eval_dataset")
                    for b in manifest["stages"].get("bench", {}).get("metrics", {}).values()
                    if b.get("eval_dataset")
                ),
                manifest.get("eval") or "eval",
            )
            entry["accuracy"][dataset] = model["accuracy"]
        if bench.get("latency"):
            entry["latency"].append(_latency_entry(bench, manifest.get("target", {})))
        entries.append(entry)
    engines = []
    engine_stage = manifest["stages"].get("engine")
    if engine_stage and engine_stage.get("metrics", {}).get("built"):
        target = manifest["target"]["name"]
        folder = staging / "engines" / target
        folder.mkdir(parents=True)
        for artifact in ("model.engine", "model.engine.json"):
            shutil.copyfile(run.root / "engine" / artifact, folder / artifact)
        engines.append(
            {
                "target": target,
                "file": f"engines/{target}/model.engine",
                "stamp": json.loads((folder / "model.engine.json").read_text()),
            }
        )
    elif engine_stage:
        engines.append(
            {
                "target": manifest["target"]["name"],
                "file": None,
                "reason": engine_stage["metrics"].get("reason"),
                "command": engine_stage["metrics"].get("command"),
                "commands": engine_stage["metrics"].get("commands"),  # per TensorRT major, and the timing
            }
        )
    (staging / "example").mkdir()
    shutil.copyfile(EXAMPLE, staging / "example" / "infer.py")
    points = pareto_points(manifest)
    if points:
        plot_pareto(points, staging / "pareto.png", title=name)
    export_inputs = manifest["stages"].get("export", {}).get("inputs", {})
    source = export_inputs.get("teacher") or export_inputs.get("model") or {}  # the checkpoint everything came from
    teacher = Path(manifest.get("teacher") or source.get("path") or "")
    teacher_sha256 = sha256_file(teacher) if teacher.is_file() else source.get("sha256")
    record = {
        **format_fields(BUNDLE_KIND, BUNDLE_VERSION),
        "name": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "models": entries,
        "engines": engines,
        "preprocessing": preprocess,
        "class_labels": labels,
        "build": {
            "command": manifest.get("command"),
            "target": manifest.get("target"),
            "budget": manifest.get("budget", {}).get("name"),
            "teacher": str(teacher),
            "teacher_arch": manifest.get("teacher_arch"),
            "teacher_name": manifest.get("teacher_name") or manifest.get("teacher_arch"),  # unregistered: its class
            "teacher_sha256": teacher_sha256,
            "stages": {
                k: {"wall_s": v.get("wall_s"), "versions": v.get("versions")} for k, v in manifest["stages"].items()
            },
        },
        "libraries": library_versions(),
        "pareto": points,
    }
    atomic_write_text(staging / "MODEL_CARD.md", model_card(record))
    record["files"] = {
        str(p.relative_to(staging)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(staging.rglob("*"))
        if p.is_file()
    }
    atomic_write_json(staging / "manifest.json", record)
    atomic_write_text(staging / "manifest.sha256", f"{sha256_file(staging / 'manifest.json')}  manifest.json\n")
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    partial_archive = archive.with_name(f".{archive.name}.tmp")
    with tarfile.open(partial_archive, "w:gz") as tar:
        tar.add(final, arcname=name)
    partial_archive.replace(archive)
    return {
        "bundle": str(final),
        "archive": str(archive),
        "files": len(record["files"]) + 2,
        "models": [e["file"] for e in entries],
        "engines": [e["file"] for e in engines if e.get("file")],
    }
