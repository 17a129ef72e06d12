"""What a model expects at its input: size, channel order and normalisation.

Recorded in every checkpoint we write and in the run manifest, so a mobile team
can feed the exported model correctly.
"""

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)


@dataclass(frozen=True)
class Preprocess:
    channels: int
    height: int
    width: int
    mean: tuple[float, ...] = field(default=(0.5,))
    std: tuple[float, ...] = field(default=(0.5,))
    channel_order: str = "gray"  # "gray", "RGB" or "BGR"
    pixel_scale: float = 255.0  # raw pixel values are divided by this before (x - mean) / std
    layout: str = "NCHW"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocess":
        data = dict(data)
        data["mean"] = tuple(data.get("mean", (0.5,)))
        data["std"] = tuple(data.get("std", (0.5,)))
        return cls(**data)


def default_preprocess(channels: int, height: int, width: int) -> Preprocess:
    """Best guess when a checkpoint does not say: ImageNet statistics for RGB, Fashion-MNIST for gray."""
    if channels == 3:
        return Preprocess(3, height, width, IMAGENET_MEAN, IMAGENET_STD, "RGB")
    if channels == 1:
        return Preprocess(1, height, width, FASHION_MNIST_MEAN, FASHION_MNIST_STD, "gray")
    return Preprocess(channels, height, width, (0.5,) * channels, (0.5,) * channels, "unknown")


def preprocess_from_onnx(path, input_shape: tuple[int, int, int] | None = None) -> Preprocess:
    """For a bare .onnx file: the input shape from its graph (or `input_shape`), statistics guessed as above."""
    import onnx

    from pipeline.errors import PipelineError

    if input_shape is None:
        try:
            dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[1:]
        except Exception as error:
            raise PipelineError(f"{path} is not a readable ONNX model: {error}") from None
        if len(dims) != 3 or not all(d.dim_value > 0 for d in dims):
            raise PipelineError(f"{path}: input shape is not fixed; pass --input-shape C,H,W")
        input_shape = tuple(d.dim_value for d in dims)
    return default_preprocess(*input_shape)


CHANNEL_ORDERS = {1: ("gray",), 3: ("RGB", "BGR")}
PREPROCESS_KEYS = ("mean", "std", "channel_order", "pixel_scale")


@dataclass(frozen=True)
class PreprocessChoice:
    """The normalisation the user says their teacher was trained with (`--mean`, `--std`, `--channel-order`,
    `--pixel-scale`, or `--preprocess FILE` with the same keys); None = what the checkpoint records or the guess.

    It travels in the teacher's load options (`TeacherSpec`), so the cache key, the students distilled from it,
    evaluation, calibration and the exported metadata all see it."""

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channel_order: str | None = None
    pixel_scale: float | None = None

    def apply(self, preprocess: Preprocess, source: str) -> Preprocess:
        """`preprocess` with the given values in place; one-line PipelineError when they cannot fit the model."""
        from pipeline.errors import PipelineError

        channels = preprocess.channels
        changes = {}
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is None:
                continue
            if len(values) not in (1, channels):
                counts = "1" if channels == 1 else f"1 or {channels}"
                raise PipelineError(
                    f"--{name} has {len(values)} values but {source} takes {channels} channel(s): give {counts}"
                )
            if name == "std" and min(values) <= 0:
                raise PipelineError(f"--std must be positive, got {','.join(map(str, values))}")
            changes[name] = tuple(float(v) for v in values) * (channels if len(values) == 1 else 1)
        if self.channel_order is not None:
            allowed = CHANNEL_ORDERS.get(channels, ("unknown",))
            if self.channel_order not in allowed:
                raise PipelineError(
                    f"--channel-order {self.channel_order} does not fit {source} ({channels} channel(s)): "
                    f"use {' or '.join(allowed)}"
                )
            changes["channel_order"] = self.channel_order
        if self.pixel_scale is not None:
            if self.pixel_scale <= 0:
                raise PipelineError(f"--pixel-scale must be positive, got {self.pixel_scale}")
            changes["pixel_scale"] = float(self.pixel_scale)
        return replace(preprocess, **changes)


def preprocess_choice(
    mean: str | None = None,
    std: str | None = None,
    channel_order: str | None = None,
    pixel_scale: float | None = None,
    file: str | None = None,
) -> PreprocessChoice | None:
    """The CLI's preprocessing options as one choice (a flag wins over the same key in FILE); None if none given."""
    values: dict = _read_preprocess_file(Path(file)) if file else {}
    flags = {"mean": mean, "std": std, "channel_order": channel_order, "pixel_scale": pixel_scale}
    values.update({name: value for name, value in flags.items() if value is not None})
    if not values:
        return None
    return PreprocessChoice(
        mean=_numbers("mean", values["mean"]) if "mean" in values else None,
        std=_numbers("std", values["std"]) if "std" in values else None,
        channel_order=_channel_order(values["channel_order"]) if "channel_order" in values else None,
        pixel_scale=_numbers("pixel-scale", values["pixel_scale"])[0] if "pixel_scale" in values else None,
    )


def _read_preprocess_file(path: Path) -> dict:
    import json

    from pipeline.errors import PipelineError

    try:
        text = path.read_text()
    except OSError as error:
        raise PipelineError(f"--preprocess {path}: cannot read it ({error.strerror or error})") from None
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as error:
        raise PipelineError(
            f"--preprocess {path} is not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {error}"
        ) from None
    if not isinstance(data, dict):
        raise PipelineError(f"--preprocess {path} must hold a table of {', '.join(PREPROCESS_KEYS)}")
    data = {key.replace("-", "_"): value for key, value in data.items()}
    unknown = sorted(set(data) - set(PREPROCESS_KEYS) - {"channels", "height", "width", "layout"})
    if unknown:  # a model card's full preprocess block (with its shape) is accepted; anything else is a typo
        raise PipelineError(
            f"--preprocess {path}: unknown key(s) {', '.join(unknown)}; use {', '.join(PREPROCESS_KEYS)}"
        )
    return {key: data[key] for key in PREPROCESS_KEYS if key in data}


def _numbers(option: str, value) -> tuple[float, ...]:
    from pipeline.errors import PipelineError

    items = value if isinstance(value, (list, tuple)) else str(value).replace(" ", "").split(",")
    try:
        numbers = tuple(float(item) for item in items)
    except (TypeError, ValueError):
        numbers = ()
    if not numbers:
        raise PipelineError(f"--{option} expects numbers such as 0.5 or 0.485,0.456,0.406, got {value!r}")
    return numbers


def _channel_order(value) -> str:
    from pipeline.errors import PipelineError

    named = {"gray": "gray", "grey": "gray", "rgb": "RGB", "bgr": "BGR"}.get(str(value).lower())
    if named is None:
        raise PipelineError(f"--channel-order expects RGB, BGR or gray, got {value!r}")
    return named


def preprocess_guess_warning(preprocess: Preprocess, model_file: str) -> str:
    """The one warning line when a bare model file records no normalisation and the user gave none."""
    mean = ",".join(f"{v:g}" for v in preprocess.mean)
    std = ",".join(f"{v:g}" for v in preprocess.std)
    return (
        f"warning: {model_file} records no preprocessing; guessing {preprocess.channel_order}, pixels / "
        f"{preprocess.pixel_scale:g}, mean {mean}, std {std}. If the teacher was trained otherwise (e.g. "
        "Normalize((0.5,), (0.5,))), pass --mean/--std/--channel-order/--pixel-scale or --preprocess FILE"
    )
