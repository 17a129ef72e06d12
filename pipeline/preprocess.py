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
