"""Load a classifier from whatever the user has: our checkpoint, a bare state_dict (any common
wrapper), TorchScript, a torch.export .pt2 or, when trusted, a pickled module.

Every path ends in a dummy forward, so a wrong input shape or a non-classifier fails here with a
one-line PipelineError instead of deep inside distillation or export.
"""

import pickle
import re
import zipfile
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn

from pipeline.errors import PipelineError
from pipeline.models.checkpoint import ARCHITECTURE_CHANGES, UNPACKERS, is_pipeline_checkpoint
from pipeline.models.fixed_batch import ExportedModule, one_image_at_a_time
from pipeline.models.identify import (
    WRAPPER_KEYS,
    default_input_shape,
    describe_mismatch,
    expected_signature,
    identify_arch,
    infer_dims,
    signature,
    strip_prefixes,
    unwrap_state_dict,
)
from pipeline.models.loaded import LoadedModel
from pipeline.models.registry import create_model, get_spec, list_models
from pipeline.preprocess import Preprocess, default_preprocess

__all__ = ["LoadedModel", "load_model", "identify_arch", "parse_input_shape"]


def parse_input_shape(text: str) -> tuple[int, int, int]:
    """'3,224,224', '3x224x224' or '(1, 28, 28)' -> (C, H, W)."""
    match = re.fullmatch(r"[(\[]?\s*(\d+)\s*[,xX]\s*(\d+)\s*[,xX]\s*(\d+)\s*[)\]]?", str(text).strip(), re.ASCII)
    # The bounds keep the batch-2 probe forward from allocating gigabytes on a typo.
    if match is None or not (0 < int(match[1]) <= 64 and all(0 < int(match[i]) <= 4096 for i in (2, 3))):
        raise PipelineError(
            f"invalid input shape {text!r}: expected CxHxW such as 3x224x224 or 1,28,28 "
            "(at most 64 channels and 4096 pixels a side)"
        )
    return (int(match[1]), int(match[2]), int(match[3]))


def load_model(
    path,
    *,
    arch: str | None = None,
    trust_checkpoint: bool = False,
    input_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
) -> LoadedModel:
    """Load `path` in any supported format; `arch` only applies to bare state_dicts (inferred when omitted)."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"teacher checkpoint {path} does not exist")
    if path.is_dir():
        raise PipelineError(f"teacher checkpoint {path} is a directory; pass the checkpoint file inside it")
    if path.stat().st_size == 0:
        raise _corrupt(path, "the file is empty")
    if arch is not None:
        get_spec(arch)  # unknown names fail before any (slow) loading
    if input_shape is not None:
        input_shape = parse_input_shape(
            ",".join(map(str, input_shape)) if isinstance(input_shape, (tuple, list)) else input_shape
        )

    kind = _sniff(path)
    if kind == "torchscript":
        loaded = _load_torchscript(path, input_shape)
    elif kind == "torch.export":
        loaded = _load_exported(path, input_shape)
    else:
        loaded = _from_object(_torch_load(path, trust_checkpoint), path, arch, input_shape)
    return _probe(loaded, num_classes)


# --- reading the file -------------------------------------------------------------------------


def _sniff(path: Path) -> str:
    """'torchscript', 'torch.export' or 'torch.save' from the archive layout, without unpickling anything."""
    try:
        with zipfile.ZipFile(path) as archive:
            inner = {name.split("/", 1)[-1] for name in archive.namelist()}
    except (zipfile.BadZipFile, OSError):
        return "torch.save"  # legacy (non-zip) torch.save, or damage that torch.load will describe
    if "archive_format" in inner or any(name.startswith("models/") and name.endswith(".json") for name in inner):
        return "torch.export"
    if "constants.pkl" in inner or any(name.startswith("code/") for name in inner):
        return "torchscript"
    return "torch.save"


def _torch_load(path: Path, trust: bool):
    try:
        with open(path, "rb") as handle:
            head = handle.read(1)
    except OSError as error:
        raise PipelineError(f"teacher checkpoint {path} cannot be read: {error.strerror}") from None
    # torch.save writes a zip ("PK"), or in its legacy format a pickle starting with PROTO (0x80).
    if head not in (b"P", b"\x80"):
        raise _corrupt(path, "neither a zip archive nor a pickle")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        if found is None:
            raise _corrupt(path, error) from None
        if not trust:
            raise PipelineError(
                f"{path} holds a pickled Python object ({found[1]}); loading it can run arbitrary "
                "code — pass --trust-checkpoint if you trust its source"
            ) from None
    except Exception as error:
        raise _corrupt(path, error) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (ImportError, AttributeError) as error:
        raise PipelineError(
            f"{path} pickles a class that cannot be imported here ({_first_line(error)}); "
            "save its state_dict, TorchScript or torch.export instead"
        ) from None
    except Exception as error:
        raise _corrupt(path, error) from None


def _corrupt(path: Path, reason) -> PipelineError:
    reason = reason if isinstance(reason, str) else _first_line(reason)
    return PipelineError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {reason}")


def _first_line(error: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    # torch's weights_only errors open with a generic paragraph; the actual cause follows this marker.
    text = text.split("WeightsUnpickler error:", 1)[-1]
    if text.startswith("The following operation failed in the TorchScript interpreter"):
        text = text.rsplit("\nRuntimeError: ", 1)[-1]  # the cause sits below two TorchScript tracebacks
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if len(line) > 160:
        line = line.split(". ")[0]
    # Terse messages (KeyError's "'101'", an empty EOFError) mean nothing without their type.
    terse = len(line) < 12 or isinstance(error, LookupError)
    return f"{type(error).__name__}: {line[:200]}" if terse else line[:200]


# --- turning what was read into a module ------------------------------------------------------


def _from_object(obj, path: Path, arch: str | None, input_shape) -> LoadedModel:
    if is_pipeline_checkpoint(obj):
        return _from_pipeline_checkpoint(obj, path, arch, input_shape)
    if isinstance(obj, nn.Module):
        return _from_module(obj, path, input_shape)
    if isinstance(obj, dict):
        module = next((obj[key] for key in WRAPPER_KEYS if isinstance(obj.get(key), nn.Module)), None)
        if module is not None:
            return _from_module(module, path, input_shape)
    state_dict = unwrap_state_dict(obj)
    if state_dict is None:
        found = (
            f"a dict with keys {', '.join(map(str, list(obj)[:6]))}" if isinstance(obj, dict) else type(obj).__name__
        )
        raise PipelineError(
            f"{path} holds no model weights: expected a state_dict (name -> tensor) or a model, found {found}"
        )
    state_dict = strip_prefixes(state_dict)
    in_channels, classes = infer_dims(state_dict)
    if arch is None:
        arch, in_channels, classes = identify_arch(state_dict, source=f"the state_dict in {path}")
    try:
        model = _build(arch, state_dict, in_channels, classes, f"checkpoint {path} does not match --arch {arch}")
    except PipelineError as error:
        try:
            guess = f" (it looks like {identify_arch(state_dict)[0]})"
        except PipelineError:
            guess = ""
        raise PipelineError(f"{error}{guess}") from None
    in_channels = in_channels or get_spec(arch).default_input[0]
    shape = input_shape or default_input_shape(arch, in_channels)
    preprocess, source = default_preprocess(*shape), "guessed"
    recorded = obj.get("preprocess") if isinstance(obj, dict) else None
    if isinstance(recorded, dict):  # some training scripts store normalisation next to the weights
        try:
            preprocess = replace(Preprocess.from_dict(recorded), channels=shape[0], height=shape[1], width=shape[2])
            source = "recorded"
        except (TypeError, ValueError):
            pass
    return LoadedModel(model, arch, classes, preprocess, "state_dict", path, {}, source)


def _from_pipeline_checkpoint(checkpoint: dict, path: Path, arch: str | None, input_shape) -> LoadedModel:
    for marker, unpack in UNPACKERS.items():  # e.g. binary weights stored as sign bits (quantize stage)
        if checkpoint.get(marker):
            checkpoint = unpack(checkpoint)
    if any(key.startswith("packed_") and value for key, value in checkpoint.items()):
        raise PipelineError(
            f"{path} stores packed weights and no reader for them is loaded (the quantize stage "
            "registers one when imported: `import pipeline.quantize.packed`)"
        )
    try:
        recorded_arch, classes = checkpoint["arch"], int(checkpoint["num_classes"])
        state_dict, preprocess = checkpoint["state_dict"], Preprocess.from_dict(checkpoint["preprocess"])
        get_spec(recorded_arch)
    except (KeyError, TypeError, ValueError, PipelineError) as error:
        raise PipelineError(f"{path} is a damaged edge-pipeline checkpoint: {_first_line(error)}") from None
    if arch is not None and arch != recorded_arch:
        raise PipelineError(f"{path} is a {recorded_arch} checkpoint but --arch {arch} was given")
    in_channels = infer_dims(state_dict)[0] or preprocess.channels
    metadata = checkpoint.get("metadata") or {}
    changes = {key: metadata[key] for key in ("dropped_blocks", *ARCHITECTURE_CHANGES) if metadata.get(key)}
    if changes:  # e.g. written by the drop stage: the architecture minus some residual blocks
        model = _build_changed(recorded_arch, changes, state_dict, in_channels, classes, path)
    else:
        model = _build(
            recorded_arch,
            state_dict,
            in_channels,
            classes,
            f"checkpoint {path} does not match its recorded arch {recorded_arch}",
        )
    if input_shape is not None:
        preprocess = replace(preprocess, channels=input_shape[0], height=input_shape[1], width=input_shape[2])
    return LoadedModel(
        model, recorded_arch, classes, preprocess, "pipeline", path, dict(checkpoint.get("metadata") or {})
    )


def _build(arch: str, state_dict: dict, in_channels, num_classes, mismatch_prefix: str) -> nn.Module:
    expected = dict(expected_signature(arch, in_channels, num_classes)[1])
    problems = describe_mismatch(expected, signature(state_dict))
    if problems:
        raise PipelineError(f"{mismatch_prefix}: {problems}")
    model = create_model(arch, in_channels=in_channels, num_classes=num_classes)
    # Shapes were checked exactly above; strict=False only forgives a missing num_batches_tracked.
    model.load_state_dict(state_dict, strict=False)
    return model


def _build_changed(arch: str, changes: dict, state_dict: dict, in_channels, num_classes, path: Path) -> nn.Module:
    """The recorded architecture with the changes its metadata names, each made by the technique that
    registered it (`models.checkpoint.register_architecture_change`)."""
    model = create_model(arch, in_channels=in_channels, num_classes=num_classes)
    for key, value in changes.items():
        if key not in ARCHITECTURE_CHANGES:
            raise PipelineError(
                f"{path} records {key}, and no reader for it is loaded (the technique that wrote it "
                "registers one when imported, e.g. `import pipeline.drop.blocks`)"
            )
        model = ARCHITECTURE_CHANGES[key][0](model, value)
    problems = describe_mismatch(signature(model.state_dict()), signature(state_dict))
    if problems:
        described = ", ".join(ARCHITECTURE_CHANGES[key][1](value) for key, value in changes.items())
        raise PipelineError(f"checkpoint {path} does not match {arch} {described}: {problems}")
    model.load_state_dict(state_dict, strict=False)
    return model


def _from_module(module: nn.Module, path: Path, input_shape) -> LoadedModel:
    if isinstance(module, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        module = module.module
    arch = in_channels = None
    try:
        arch, in_channels, classes = identify_arch(module.state_dict())
        if type(module).__name__ != expected_signature(arch, in_channels, classes)[0]:
            arch = None  # same weights layout, different class: its forward may differ from ours
    except PipelineError:
        pass
    if input_shape is None:
        if arch is None:
            raise PipelineError(
                f"{path} holds a pickled {type(module).__name__}, which does not record its input "
                "size; pass --input-shape CxHxW (e.g. 3x224x224)"
            )
        input_shape = default_input_shape(arch, in_channels)
    return LoadedModel(module, arch, None, default_preprocess(*input_shape), "pickle", path, {}, "guessed")


def _load_torchscript(path: Path, input_shape) -> LoadedModel:
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as error:
        raise _corrupt(path, error) from None
    if input_shape is None:
        # create_model tags modules with arch_name and torch.jit.script keeps that attribute (trace does not).
        name = getattr(module, "arch_name", None)
        in_channels = infer_dims(dict(module.state_dict()))[0]
        if name not in list_models() or in_channels is None:
            raise PipelineError(
                f"{path} is TorchScript, which does not record its input size; "
                "pass --input-shape CxHxW (e.g. 3x224x224)"
            )
        input_shape = default_input_shape(name, in_channels)
    return LoadedModel(module, None, None, default_preprocess(*input_shape), "torchscript", path, {}, "guessed")


def _load_exported(path: Path, input_shape) -> LoadedModel:
    try:
        program = torch.export.load(str(path))
    except Exception as error:
        raise _corrupt(path, error) from None
    user_inputs = set(program.graph_signature.user_inputs)
    examples = [
        node.meta.get("val") for node in program.graph.nodes if node.op == "placeholder" and node.name in user_inputs
    ]
    if len(examples) != 1 or not isinstance(examples[0], torch.Tensor) or examples[0].dim() != 4:
        raise PipelineError(
            f"{path} is not a single-input image classifier: its exported program takes "
            f"{len(examples)} input(s); expected one NCHW tensor"
        )
    batch, *dims = examples[0].shape
    if isinstance(batch, int) and batch != 1:
        raise PipelineError(
            f"{path} was exported for a fixed batch of {batch}; re-export it with a dynamic "
            "batch dimension (torch.export.Dim)"
        )
    if input_shape is None:
        if not all(isinstance(dim, int) for dim in dims):
            raise PipelineError(f"{path} was exported with a dynamic image size; pass --input-shape CxHxW")
        input_shape = tuple(dims)
    model = ExportedModule(program.module(), per_image=isinstance(batch, int))
    return LoadedModel(model, None, None, default_preprocess(*input_shape), "torch.export", path, {}, "guessed")


# --- proving it runs --------------------------------------------------------------------------


def _probe(loaded: LoadedModel, num_classes: int | None) -> LoadedModel:
    model = loaded.model.float().eval()
    dims = "x".join(map(str, loaded.input_shape))
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise PipelineError(
                f"{loaded.path}: {bad} NaN/Inf value(s) in {name}: the checkpoint is damaged or "
                "its training diverged; every output would be meaningless"
            )
    # Batch 2, not 1: a model hard-wired to batch 1 (reshape(1, -1), a static export) would pass a
    # batch-1 probe and then fail in the middle of distillation.
    try:
        with torch.no_grad():
            output = model(torch.randn(2, *loaded.input_shape))
    except Exception as error:
        model = one_image_at_a_time(model, loaded.input_shape) if loaded.source_format == "torchscript" else None
        if model is None:
            raise PipelineError(f"{loaded.path}: model rejects input shape {dims}: {_first_line(error)}") from None
        with torch.no_grad():
            output = model(torch.randn(2, *loaded.input_shape))
    if not (
        isinstance(output, torch.Tensor) and output.dim() == 2 and output.shape[0] == 2 and output.is_floating_point()
    ):
        got = "x".join(map(str, output.shape)) if isinstance(output, torch.Tensor) else type(output).__name__
        raise PipelineError(
            f"{loaded.path}: expected [2, num_classes] logits for a batch of 2 {dims} inputs, got {got}"
        )
    classes = int(output.shape[1])
    if num_classes is not None and num_classes != classes:
        raise PipelineError(f"{loaded.path} outputs {classes} classes but --num-classes {num_classes} was given")
    if loaded.num_classes is not None and loaded.num_classes != classes:
        raise PipelineError(f"{loaded.path} records {loaded.num_classes} classes but its model outputs {classes}")
    return replace(loaded, model=model, num_classes=classes)
