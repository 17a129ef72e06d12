"""New views of training images for the KD loops: shifts, flips and mixup. The teacher labels each view, so
the student learns the teacher's function between and around the images, not only at them."""

import torch
import torch.nn.functional as F


def random_shift(images: torch.Tensor, pixels: int, rng: torch.Generator) -> torch.Tensor:
    """Translate each image by up to `pixels` in x and y (edge padding), the classic small-image augmentation."""
    if pixels <= 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (pixels,) * 4, mode="replicate")
    dy = torch.randint(2 * pixels + 1, (n, 1, 1), generator=rng)
    dx = torch.randint(2 * pixels + 1, (n, 1, 1), generator=rng)
    rows = (dy + torch.arange(h).view(1, h, 1)).expand(n, h, w)  # one gather for the whole batch
    cols = (dx + torch.arange(w).view(1, 1, w)).expand(n, h, w)
    return padded[torch.arange(n).view(n, 1, 1), :, rows, cols].permute(0, 3, 1, 2).contiguous()


def random_shift_flip(images: torch.Tensor, pixels: int, rng: torch.Generator) -> torch.Tensor:
    """random_shift, then a random half mirrored left-right; differentiable, so synthesizers can use it too."""
    shifted = random_shift(images, pixels, rng)
    flip = (torch.rand(len(images), generator=rng) < 0.5).to(images.device).view(-1, 1, 1, 1)
    return torch.where(flip, shifted.flip(-1), shifted)


def augment_batch(images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """New views of pool images: 2-px shifts, horizontal flips, and mixup of half the batch with other images.
    The teacher labels the result, so the student learns the teacher's function between and around the
    synthetic points, not only at them."""
    n = len(images)
    images = random_shift_flip(images.cpu(), 2, rng)
    mixed = torch.rand(n, generator=rng) < 0.5
    weight = torch.rand(n, 1, 1, 1, generator=rng)
    partner = images[torch.randperm(n, generator=rng)]
    images = torch.where(mixed.view(n, 1, 1, 1), weight * images + (1 - weight) * partner, images)
    return images
