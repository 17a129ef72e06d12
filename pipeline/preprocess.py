"""What a model expects at its input: size, channel order and normalisation.

Recorded in every checkpoint we write and in the run manifest, so a mobile team
can feed the exported model correctly.
"""

from dataclasses import asdict, dataclass, field

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
