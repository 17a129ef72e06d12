"""Pre-pooling features and logits from one forward pass, for every registry family (a forward hook on the
module whose output the classifier pools: the last stage of a ResNet, `features` of a MobileNet)."""

import torch
import torch.nn as nn

from pipeline.errors import PipelineError


def pre_pool_module(model: nn.Module) -> nn.Module:
    if hasattr(model, "stage_names"):  # the FMNIST ResNets
        return getattr(model, model.stage_names[-1])
    if hasattr(model, "layer4"):  # torchvision ResNets
        return model.layer4
    if hasattr(model, "features"):  # MobileNetV2, LeNet
        return model.features
    raise PipelineError(
        f"cannot find the pre-pooling features of a {type(model).__name__}; "
        "feature distillation needs a registry architecture"
    )


class FeatureTap:
    """`tap(x)` -> (pre-pooling features, logits) of `model`."""

    def __init__(self, model: nn.Module):
        self.model = model
        self._features = None
        self._handle = pre_pool_module(model).register_forward_hook(self._keep)

    def _keep(self, _module, _inputs, output) -> None:
        self._features = output

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(images)
        features, self._features = self._features, None
        return features, logits

    def close(self) -> None:
        self._handle.remove()
