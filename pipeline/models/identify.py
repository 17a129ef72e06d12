"""Recognise a bare state_dict: unwrap training-script wrappers, strip wrapper prefixes, and
find the registry architecture whose keys and tensor shapes match exactly."""

from functools import lru_cache

import torch

from pipeline.errors import PipelineError
from pipeline.models.registry import create_model, get_spec, list_models

# Keys under which training scripts commonly nest the weights; the raw weights win over an EMA copy.
WRAPPER_KEYS = (
    "state_dict",
    "model_state_dict",
    "model_state",
    "model",
    "net",
    "network",
    "weights",
    "params",
    "module",
    "state_dict_ema",
    "model_ema",
    "ema",
)
# Added by DataParallel / DistributedDataParallel, torch.compile and Lightning-style wrappers.
STRIP_PREFIXES = ("module.", "_orig_mod.", "model.", "net.")


def is_state_dict(obj) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in obj.items())
    )


def unwrap_state_dict(obj):
    """The state_dict inside `obj` (itself, or under a common wrapper key), or None."""
    if is_state_dict(obj):
        return obj
    if not isinstance(obj, dict):
        return None
    for key in WRAPPER_KEYS:
        if is_state_dict(obj.get(key)):
            return obj[key]
    nested = [value for value in obj.values() if is_state_dict(value)]
    # Only an unambiguous lone tensor dict is taken: an optimizer state or a second model is not ours to pick.
    return nested[0] if len(nested) == 1 else None


def strip_prefixes(state_dict: dict) -> dict:
    changed = True
    while changed:
        changed = False
        for prefix in STRIP_PREFIXES:
            if all(key.startswith(prefix) for key in state_dict):
                state_dict = {key[len(prefix) :]: value for key, value in state_dict.items()}
                changed = True
    return state_dict


def signature(state_dict: dict) -> dict[str, tuple[int, ...]]:
    # num_batches_tracked is absent from checkpoints written before PyTorch 0.4.1 and does not
    # affect inference, so it never decides whether a checkpoint fits an architecture.
    return {key: tuple(value.shape) for key, value in state_dict.items() if not key.endswith("num_batches_tracked")}


def infer_dims(state_dict: dict) -> tuple[int | None, int | None]:
    """(in_channels, num_classes): the stem conv is the first 4-D weight, the classifier the last 2-D one."""
    convs = [value for key, value in state_dict.items() if key.endswith("weight") and value.dim() == 4]
    linears = [value for key, value in state_dict.items() if key.endswith("weight") and value.dim() == 2]
    return (int(convs[0].shape[1]) if convs else None, int(linears[-1].shape[0]) if linears else None)


@lru_cache(maxsize=64)
def expected_signature(arch: str, in_channels: int | None, num_classes: int | None) -> tuple:
    # Built on the meta device: shapes without allocating or initialising weights (resnet50 in ~0.2 s).
    with torch.device("meta"):
        model = create_model(arch, in_channels=in_channels, num_classes=num_classes)
    return type(model).__name__, tuple(signature(model.state_dict()).items())


def describe_mismatch(expected: dict, actual: dict, limit: int = 3) -> str:
    """'missing a, b (+N more); unexpected c; wrong shape d 1x2 (expected 3x4)' or '' when they match."""

    def listed(label: str, items: list[str]) -> str | None:
        if not items:
            return None
        more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
        return f"{label} {', '.join(items[:limit])}{more}"

    def dims(shape) -> str:
        return "x".join(map(str, shape)) or "scalar"

    parts = [
        listed("missing", [key for key in expected if key not in actual]),
        listed("unexpected", [key for key in actual if key not in expected]),
        listed(
            "wrong shape",
            [
                f"{key} {dims(actual[key])} (expected {dims(shape)})"
                for key, shape in expected.items()
                if key in actual and actual[key] != shape
            ],
        ),
    ]
    return "; ".join(part for part in parts if part)


def identify_arch(state_dict, *, source: str = "checkpoint") -> tuple[str, int, int]:
    """(arch, in_channels, num_classes) of the registry architecture matching `state_dict` exactly."""
    state_dict = strip_prefixes(unwrap_state_dict(state_dict) or {})
    actual = signature(state_dict)
    in_channels, num_classes = infer_dims(state_dict)
    if in_channels is not None and num_classes is not None:
        for arch in list_models():
            # Cheap pre-filter: only architectures with the same number of tensors are built.
            if len(expected_signature(arch, None, None)[1]) != len(actual):
                continue
            if dict(expected_signature(arch, in_channels, num_classes)[1]) == actual:
                return arch, in_channels, num_classes
    raise PipelineError(
        f"{source} ({len(actual)} tensors, in_channels={in_channels}, num_classes={num_classes}) "
        f"matches no known architecture; pass --arch (known: {', '.join(list_models())}) "
        "or save it as TorchScript / torch.export"
    )


def default_input_shape(arch: str, in_channels: int) -> tuple[int, int, int]:
    family = get_spec(arch).family
    if family in ("lenet", "cifar-resnet"):
        side = 28 if in_channels == 1 else 32  # Fashion-MNIST / CIFAR resolutions
        return (in_channels, side, side)
    _, height, width = get_spec(arch).default_input
    return (in_channels, height, width)
