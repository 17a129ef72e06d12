"""`pipeline verify BUNDLE`: every byte is what the bundle says, and the models still compute what they did.

1. manifest.sha256 matches manifest.json (a changed manifest cannot vouch for itself);
2. every file the manifest lists exists with its sha256 and size, and no file is there that it does not list;
3. every ONNX model loads in onnxruntime and reproduces its reference output on the reference input;
4. engines: their stamps match what the manifest recorded (loading them needs the target's TensorRT and GPU).
A .tar.gz is unpacked (data-only filter) into a temporary folder first.
"""

import json
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from pipeline.bundle.bundle import BUNDLE_KIND, BUNDLE_MIGRATIONS, BUNDLE_VERSION
from pipeline.errors import PipelineError
from pipeline.fileio import sha256_file
from pipeline.formats import read_format
from pipeline.runtimes import OnnxRuntimeRunner

PARITY_TOLERANCE = 1e-4


def verify_bundle(path: Path) -> dict:
    path = Path(path)
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        with tempfile.TemporaryDirectory(prefix="edge-pipeline-verify-") as folder:
            try:
                with tarfile.open(path, "r:gz") as tar:
                    tar.extractall(folder, filter="data")  # no absolute paths, links out, or devices
            except (tarfile.TarError, OSError, EOFError) as error:
                raise PipelineError(f"{path.name} is not a readable bundle archive: {error}") from None
            roots = [p for p in Path(folder).iterdir() if p.is_dir()]
            if len(roots) != 1:
                raise PipelineError(f"{path.name} should hold one bundle folder, it holds {len(roots)}")
            return {**verify_bundle(roots[0]), "archive": str(path)}
    if not (path / "manifest.json").is_file():
        raise PipelineError(f"{path} is not a bundle (no manifest.json)")
    recorded = (path / "manifest.sha256").read_bytes() if (path / "manifest.sha256").is_file() else None
    actual = f"{sha256_file(path / 'manifest.json')}  manifest.json\n".encode()  # byte for byte, as written
    if recorded != actual:
        raise PipelineError(f"{path.name}/manifest.json does not match manifest.sha256: the manifest was changed")
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except ValueError:
        raise PipelineError(f"{path.name}/manifest.json is not valid JSON") from None
    manifest = read_format(
        manifest,
        BUNDLE_KIND,
        BUNDLE_VERSION,
        what=f"bundle {path.name}",
        fix="make it again with `pipeline bundle RUN_FOLDER`",
        migrations=BUNDLE_MIGRATIONS,
    )
    listed = manifest.get("files", {})
    present = {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()} - {"manifest.json", "manifest.sha256"}
    if present - set(listed):
        raise PipelineError(f"files not in the manifest: {', '.join(sorted(present - set(listed)))}")
    for name, entry in listed.items():
        file = path / name
        if not file.is_file():
            raise PipelineError(f"{name} is listed in the manifest but missing")
        if file.stat().st_size != entry["bytes"] or sha256_file(file) != entry["sha256"]:
            raise PipelineError(f"{name} was changed: its sha256 is not the one in the manifest")
    checks = [_parity(path, model) for model in manifest["models"]]
    engines = []
    for engine in manifest.get("engines", []):
        if engine.get("file"):
            stamp = json.loads((path / engine["file"]).with_name("model.engine.json").read_text())
            if stamp != engine["stamp"]:
                raise PipelineError(f"{engine['file']}: its stamp differs from the manifest's")
            engines.append(
                {
                    "file": engine["file"],
                    "tensorrt_version": stamp.get("tensorrt_version"),
                    "gpu": stamp.get("gpu_name"),
                    "loaded": False,
                    "note": "hash and stamp checked; loading needs that TensorRT version and GPU",
                }
            )
    return {"bundle": str(path), "files_checked": len(listed) + 2, "models": checks, "engines": engines, "ok": True}


def _parity(root: Path, model: dict) -> dict:
    batch = np.load(root / "reference" / "input.npy")
    try:
        with OnnxRuntimeRunner(root / model["file"]) as runner:  # the bundle's own session settings
            output = runner.infer(batch)
    except PipelineError as error:
        raise PipelineError(f"{model['file']} does not load or run in onnxruntime: {error}") from None
    expected = np.load(root / model["reference_output"])
    difference = (
        float(np.abs(output.astype(np.float32) - expected).max()) if output.shape == expected.shape else float("inf")
    )
    if not difference <= PARITY_TOLERANCE:
        raise PipelineError(f"{model['file']} no longer reproduces its reference output (max |diff| {difference:.2e})")
    return {"file": model["file"], "max_abs_diff": difference}
