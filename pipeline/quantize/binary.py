"""Binary weights (BWN, Rastegari et al. 2016; seed 001): W ~ alpha * sign(W), alpha = mean |W| per output
channel, trained by data-free knowledge distillation with a straight-through estimator.

The first convolution and the classifier keep their precision (they are small, and binarising them costs
the most accuracy). So do the layers that lose the most accuracy per weight binarised, measured one layer at
a time (`layer_damage`), as long as they hold at most 1 - coverage of the binarisable weights
(`split_by_damage`): on the embedded LeNet-5, conv2 holds 4 % of those weights and binarising it alone
changes the logits 35x more per weight than conv3; keeping it took binary LeNet-5 from 88.2 % to 90.7 % top-1
on 10,000 held-out Fashion-MNIST training images, the teacher being at 92.4 %
(benchmarks/experiments/binary_recipes.py; a longer KD, Adam or other learning rates did not help).

For inference, +-alpha becomes per-channel INT8 weights (+-127 with scale alpha/127, exact), because
neither TensorRT nor onnxruntime has 1-bit kernels; the packed sign bits travel in a separate checkpoint
(`packed.save_binary_checkpoint`) that `pipeline.models.load` rebuilds exactly."""

import copy

import numpy as np
import torch
import torch.nn as nn
import torch.nn.utils.parametrize as parametrize

PACKED_KEY = "packed_binary_weights"


def binary_weight(weight: torch.Tensor) -> torch.Tensor:
    """alpha * sign(W) per output channel; sign(0) = +1 so every weight is one bit."""
    alpha = weight.abs().mean(dim=tuple(range(1, weight.dim())), keepdim=True)
    return alpha * torch.where(weight >= 0, 1.0, -1.0)


class BinarizeWeight(nn.Module):
    """Parametrisation: the layer computes with alpha * sign(W) while W (the latent weight) trains.
    Straight-through estimator as in BinaryConnect: d sign(w)/dw = 1 where |w| <= 1, else 0; alpha
    receives its own gradient."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        alpha = weight.abs().mean(dim=tuple(range(1, weight.dim())), keepdim=True)
        clipped = weight.clamp(-1, 1)
        signs = clipped + (torch.where(weight >= 0, 1.0, -1.0) - clipped).detach()
        return alpha * signs


def binarisable_layers(model: nn.Module) -> list[str]:
    """Every Conv2d/Linear except the first and the last in definition order (first and last keep precision)."""
    names = [name for name, module in model.named_modules() if isinstance(module, (nn.Conv2d, nn.Linear))]
    return names[1:-1]


@torch.no_grad()
def layer_damage(model: nn.Module, layers: list[str], images, probe: torch.Tensor, seed: int = 0) -> list[dict]:
    """For each layer: binarise it alone (BatchNorm statistics re-estimated on a few batches of `images`) and
    measure the logits' relative MSE against `model` on `probe` (held-back images, no labels). `damage_per_weight`
    is that error per million weights: what binarising the layer costs per bit it saves."""
    from pipeline.progress import progress_bar

    model.eval()
    reference = model(probe)
    modules = dict(model.named_modules())
    rows = []
    with progress_bar("binary weights: per-layer damage", len(layers)) as bar:
        for name in layers:
            probe_model = binarise(copy.deepcopy(model), [name])
            reestimate_batchnorm(probe_model, images, batch_size=32, seed=seed, input_values=0)  # 10 batches
            logits = probe_model.eval()(probe)
            error = float((logits - reference).pow(2).mean() / reference.pow(2).mean().clamp_min(1e-12))
            weights = modules[name].weight.numel()
            rows.append(
                {"layer": name, "weights": weights, "relative_mse": error, "damage_per_weight": error / weights * 1e6}
            )
            bar.advance()
    return rows


def split_by_damage(rows: list[dict], coverage: float) -> tuple[list[str], list[str]]:
    """(binarised, kept): keep the layers with the highest damage per weight, worst first, while the kept ones
    hold at most 1 - coverage of the weights; binarise the rest (in their original order)."""
    allowance = (1 - coverage) * sum(row["weights"] for row in rows)
    kept, kept_weights = set(), 0
    for row in sorted(rows, key=lambda row: row["damage_per_weight"], reverse=True):
        if kept_weights + row["weights"] > allowance:
            break
        kept.add(row["layer"])
        kept_weights += row["weights"]
    return [row["layer"] for row in rows if row["layer"] not in kept], [
        row["layer"] for row in rows if row["layer"] in kept
    ]


def binarise(model: nn.Module, layers: list[str]) -> nn.Module:
    """Put the BWN parametrisation on `layers` (in place) and return the model."""
    modules = dict(model.named_modules())
    for name in layers:
        parametrize.register_parametrization(modules[name], "weight", BinarizeWeight())
    return model


@torch.no_grad()
def reestimate_batchnorm(
    model: nn.Module, images, batch_size: int = 64, seed: int = 0, input_values: int = 10_000_000
) -> int:
    """Recompute every BatchNorm's running statistics with the binarised weights in place (plain average over
    batches of `images` totalling about `input_values` input values: 200 batches at 28x28, 10 at 224x224 RGB). Binarising changes each layer's output distribution, so the teacher's
    statistics no longer describe it; the transfer set reproduces the teacher's BN statistics by
    construction (BN inversion), so it is a fair stand-in for the real data here. On the embedded ResNet-20
    (1500 KD iterations) this took binary weights from 87.96 % to 89.81 % top-1. Returns the layers updated."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers:
        return 0
    generator = torch.Generator().manual_seed(seed)
    per_image = images[:1].numel()
    batches = max(10, min(200, input_values // (batch_size * per_image)))
    was_training = model.training
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over the batches
    model.train()
    for _ in range(batches):
        model(images[torch.randint(len(images), (batch_size,), generator=generator)])
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    model.train(was_training)
    return len(layers)


def materialise(model: nn.Module) -> nn.Module:
    """Replace each parametrisation by its value (alpha * sign(W)) as a plain weight, in place."""
    for module in list(model.modules()):
        if parametrize.is_parametrized(module, "weight"):
            with torch.no_grad():
                value = binary_weight(module.parametrizations.weight.original)
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
            module.weight.data.copy_(value)
    return model


def is_binary(weight: torch.Tensor) -> bool:
    """True when every output channel holds one magnitude with two signs (what `binary_weight` produces)."""
    flat = weight.detach().reshape(len(weight), -1)
    magnitude = flat.abs()
    return bool(torch.all(magnitude == magnitude[:, :1]))


def pack(weight: torch.Tensor) -> dict:
    """One bit per weight (1 = +alpha) and alpha per output channel."""
    flat = weight.detach().reshape(len(weight), -1)
    alpha = flat.abs()[:, 0].clone()
    bits = np.packbits((flat >= 0).numpy().astype(np.uint8), axis=None)
    return {"bits": torch.from_numpy(bits), "alpha": alpha.float(), "shape": list(weight.shape)}


def unpack(entry: dict) -> torch.Tensor:
    shape = [int(size) for size in entry["shape"]]
    count = int(np.prod(shape))
    signs = np.unpackbits(entry["bits"].numpy(), count=count).reshape(shape[0], -1).astype(np.float32) * 2 - 1
    weight = torch.from_numpy(signs) * entry["alpha"].view(-1, 1)
    return weight.reshape(shape)


def packed_state(state_dict: dict, layers: list[str]) -> tuple[dict, dict]:
    """Split a materialised state_dict into (the rest, {weight name: packed entry})."""
    packed, rest = {}, {}
    names = {f"{layer}.weight" for layer in layers}
    for name, tensor in state_dict.items():
        if name in names:
            packed[name] = pack(tensor)
        else:
            rest[name] = tensor
    return rest, packed


def unpacked_state(state_dict: dict, packed: dict) -> dict:
    return {**state_dict, **{name: unpack(entry) for name, entry in packed.items()}}


def packed_bytes(packed: dict) -> int:
    """On-disk payload of the binarised layers: sign bits plus one float32 alpha per output channel."""
    return sum(entry["bits"].numel() + 4 * entry["alpha"].numel() for entry in packed.values())


def fp32_bytes(packed: dict) -> int:
    return sum(4 * int(np.prod(entry["shape"])) for entry in packed.values())
