"""DAFL's generator (Chen et al. 2019, public code), generalised to any square input size:
Linear -> BN -> [Upsample x2 -> Conv3x3 -> BN(eps 0.8) -> LeakyReLU(0.2)] * k -> Conv3x3 -> Tanh -> BN(affine=False).

`output="pixels"` replaces the final Tanh -> BN by a sigmoid into valid pixels followed by the teacher's
normalisation, so every sample is an image a camera could produce (used by bn-inversion).
"""

import torch
import torch.nn as nn


def upsampling_steps(image_size: int) -> int:
    """Two steps for 28/32 px as in the paper; more for large inputs so the first feature map stays <= 8 px."""
    steps = 2
    while image_size // (2**steps) > 8 and image_size % (2 ** (steps + 1)) == 0:
        steps += 1
    if image_size % (2**steps):
        raise ValueError(f"image size {image_size} is not divisible by {2**steps}")
    return steps


class Generator(nn.Module):
    def __init__(
        self,
        image_size: int,
        channels: int,
        latent_dim: int = 100,
        width: int = 128,
        output: str = "bn",
        mean: tuple[float, ...] = (0.0,),
        std: tuple[float, ...] = (1.0,),
    ):
        super().__init__()
        self.latent_dim, self.image_size, self.channels, self.output = latent_dim, image_size, channels, output
        steps = upsampling_steps(image_size)
        self.init_size = image_size // (2**steps)
        self.width = width
        self.project = nn.Sequential(nn.Linear(latent_dim, width * self.init_size**2))
        layers: list[nn.Module] = [nn.BatchNorm2d(width)]
        in_width = width
        for step in range(steps):
            out_width = width if step == 0 else width // 2
            layers += [
                nn.Upsample(scale_factor=2),
                nn.Conv2d(in_width, out_width, 3, 1, 1),
                nn.BatchNorm2d(out_width, eps=0.8),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            in_width = out_width
        layers.append(nn.Conv2d(in_width, channels, 3, 1, 1))
        if output == "bn":
            layers += [nn.Tanh(), nn.BatchNorm2d(channels, affine=False)]
        elif output != "pixels":
            raise ValueError(f"unknown generator output {output!r}")
        self.body = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.body(self.project(z).view(z.shape[0], self.width, self.init_size, self.init_size))
        if self.output == "pixels":
            x = (torch.sigmoid(x) - self.mean) / self.std
        return x

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self(torch.randn(n, self.latent_dim, generator=generator).to(self.mean.device))

    def hyperparameters(self) -> dict:
        return {
            "image_size": self.image_size,
            "channels": self.channels,
            "latent_dim": self.latent_dim,
            "width": self.width,
            "output": self.output,
            "mean": self.mean.flatten().tolist(),
            "std": self.std.flatten().tolist(),
        }


def generator_from_hyperparameters(hp: dict) -> Generator:
    return Generator(
        hp["image_size"],
        hp["channels"],
        latent_dim=hp["latent_dim"],
        width=hp["width"],
        output=hp.get("output", "bn"),
        mean=tuple(hp.get("mean", (0.0,))),
        std=tuple(hp.get("std", (1.0,))),
    )
