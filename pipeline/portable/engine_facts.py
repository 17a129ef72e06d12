"""What an engine holds and where it can run (issue 23 items 5 and 9), for the builder in tensorrt_loader.py.

What it holds: the engine inspector's layer information (a build with detailed profiling verbosity), so a stamp
records the precisions the network computes in, not the precision that was asked for. The JSON differs by
major: 10.x lists the I/O tensors as "Bindings" (names), 11.x as "I/O Tensors" (objects with a DataType), per
NVIDIA's "Migrating IEngineInspector Usage from TensorRT 10.x to 11.x"; layer tensors carry their type in a
"Format/DataType" string or a "DataType" field, so both are read.

Where it can run: by default only on the TensorRT version and GPU that built it. NVIDIA's "Version
Compatibility" (10.16.1) and "Engine Compatibility" (11.1.0) pages: an engine built with
BuilderFlag.VERSION_COMPATIBLE (8.6 or later) loads on that version and later ones, and its runtime must allow
the embedded lean runtime (engine_host_code_allowed); HardwareCompatibilityLevel.AMPERE_PLUS makes it load on
Ampere and newer GPUs and is supported only for engines built on Ampere or later (compute capability 8.0+).
"""

from __future__ import annotations  # Python 3.8 on JetPack 5

import json
import os
import re

from .errors import BenchError

AMPERE = (8, 0)
_PRECISION_WORDS = (("int8", r"\bint8\b"), ("fp16", r"\b(fp16|half)\b"), ("fp32", r"\b(fp32|float)\b"))


def _version(text) -> tuple:
    return tuple(int(part) for part in re.findall(r"\d+", str(text)))


def apply_portability(trt, config, version_compatible: bool, hardware_compatible: bool, gpu: dict, dla_core) -> dict:
    """Set the portability options on a builder config; the stamp's record of them. Refuses what NVIDIA
    documents as unsupported (hardware compatibility before Ampere, or for a DLA engine)."""
    if version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if hardware_compatible:
        capability = _version(gpu.get("compute_capability", "0.0"))
        if capability < AMPERE or dla_core is not None:
            where = "a DLA engine" if dla_core is not None else f"compute capability {gpu.get('compute_capability')}"
            raise BenchError(f"hardware compatibility needs an Ampere or newer GPU (8.0+), not {where}")
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    return {"version_compatible": bool(version_compatible), "hardware_compatible": bool(hardware_compatible)}


def portability_mismatch(stamp: dict, tensorrt_version: str, gpu: dict) -> str | None:
    """Why this engine cannot load on this TensorRT and GPU (None when it can), naming the option that would
    have made it portable when it was built without it."""
    built = str(stamp.get("tensorrt_version"))
    # a trtexec build's version comes from its banner (major.minor.patch); Python's has a fourth, build part
    if _version(built)[:3] != _version(tensorrt_version)[:3]:
        if not stamp.get("version_compatible"):
            return (
                f"engine built with TensorRT {built}, this is TensorRT {tensorrt_version}: rebuild it here "
                "(`pipeline engine`), or build it with version_compatible = true in the target's [tensorrt] so "
                "later TensorRT versions load it"
            )
        if _version(tensorrt_version) < _version(built):
            return f"a version-compatible engine from TensorRT {built} loads on that version or later, not {tensorrt_version}"
    # a trtexec build's stamp names no GPU: TensorRT's own deserialisation then says whether it loads
    if stamp.get("compute_capability") is not None and stamp.get("compute_capability") != gpu.get("compute_capability"):
        if not stamp.get("hardware_compatible"):
            return (
                f"engine built for {stamp.get('gpu_name')} (compute {stamp.get('compute_capability')}), this GPU is "
                f"{gpu.get('gpu_name')} (compute {gpu.get('compute_capability')}): rebuild it on the target, or build "
                "it with hardware_compatible = true (Ampere and newer GPUs) in the target's [tensorrt]"
            )
        if _version(gpu.get("compute_capability", "0.0")) < AMPERE:
            return f"a hardware-compatible engine runs on Ampere or newer, not compute {gpu.get('compute_capability')}"
    return None


def tensor_precision(text: str | None) -> str | None:
    """fp32 / fp16 / int8 from an inspector type string ("Half", "Row major linear FP16 format", "Int8", "Float")."""
    lowered = str(text or "").lower()
    return next((name for name, pattern in _PRECISION_WORDS if re.search(pattern, lowered)), None)


def summarize_inspector(information: str) -> dict:
    """network_precision, layer_precisions (outputs per precision) and io_tensors from the inspector's JSON,
    whichever major wrote it."""
    try:
        data = json.loads(information)
    except ValueError:
        raise BenchError("the engine inspector's layer information is not valid JSON") from None
    counts: dict = {}
    for layer in data.get("Layers", []):
        if not isinstance(layer, dict):
            continue  # layer names only: built without detailed profiling verbosity
        for output in layer.get("Outputs", []):
            kind = tensor_precision(
                output.get("Format/DataType") or output.get("Format/Datatype") or output.get("DataType")
            )
            if kind is not None:
                counts[kind] = counts.get(kind, 0) + 1
    if "I/O Tensors" in data:  # 11.x
        io = [
            {"name": t.get("Name"), "mode": t.get("IOMode"), "precision": tensor_precision(t.get("DataType"))}
            for t in data["I/O Tensors"]
        ]
    else:  # 10.x: names only
        io = [{"name": name, "mode": None, "precision": None} for name in data.get("Bindings", [])]
    # the precision most layer outputs are in: an fp16 or int8 engine keeps a few fp32 layers (reformats, the
    # classifier), so "mixed" would say little; the counts say the rest
    network = max(counts, key=counts.get) if counts else None
    return {"network_precision": network, "layer_precisions": counts, "io_tensors": io}


NOT_INSPECTED = {"network_precision": None, "layer_precisions": {}, "io_tensors": [], "inspected": False}


def read_layer_info(path: str) -> dict:
    """The summary of a layer-information file trtexec exported (`--exportLayerInfo`), or why there is none."""
    if not os.path.isfile(path):
        return dict(NOT_INSPECTED)
    try:
        with open(path) as handle:
            return {**summarize_inspector(handle.read()), "inspected": True}
    except BenchError as error:
        return {**NOT_INSPECTED, "inspection_error": str(error)}


def inspect_serialized(trt, logger, serialized) -> dict:
    """The inspector's summary of a just-built engine (its runtime is local to this call)."""
    runtime = trt.Runtime(logger)
    runtime.engine_host_code_allowed = True  # our own build: a version-compatible plan embeds its lean runtime
    engine = runtime.deserialize_cuda_engine(serialized)
    if engine is None:
        return dict(NOT_INSPECTED)
    inspector = engine.create_engine_inspector()
    summary = summarize_inspector(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    del inspector, engine, runtime  # inspector before engine, engine before runtime
    return {**summary, "inspected": True}
