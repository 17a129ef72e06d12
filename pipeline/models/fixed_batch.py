"""Teachers whose graph has a batch size baked in: a torch.export program exported from a batch-1 example, or a
TorchScript module traced at batch 1. Both run one image at a time in PyTorch and declare `fixed_batch`, which
`export_onnx` keeps in the ONNX file and the onnxruntime runner honours by splitting larger batches."""

import torch
import torch.nn as nn


class ExportedModule(nn.Module):
    """Shell around `ExportedProgram.module()`.

    That graph refuses .train()/.eval() (its mode was fixed at export time), which would break any
    caller that puts a teacher in eval mode; and a graph exported from a batch-1 example (the
    usual case) guards on batch size 1, so such graphs are run one image at a time.
    """

    def __init__(self, graph: nn.Module, per_image: bool):
        super().__init__()
        self.graph = graph
        self.per_image = per_image

    @property
    def fixed_batch(self) -> int | None:
        """The batch the graph was exported for, when it was fixed: the ONNX export keeps it (`export_onnx`)."""
        return 1 if self.per_image else None

    def train(self, mode: bool = True):
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.per_image:
            return torch.cat([self.graph(image) for image in x.split(1)])
        return self.graph(x)


class ImageByImage(nn.Module):
    """A TorchScript module traced with a batch of 1 baked in (`x.view(1, -1)`): run one image at a time, and
    exported at batch 1 (`fixed_batch`, as for a batch-1 torch.export program)."""

    fixed_batch = 1

    def __init__(self, graph: nn.Module):
        super().__init__()
        self.graph = graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.graph(image) for image in x.split(1)])


def one_image_at_a_time(model: nn.Module, input_shape: tuple[int, int, int]) -> nn.Module | None:
    """The wrapped model when `model` takes a single image where a batch of 2 failed, else None."""
    try:
        with torch.no_grad():
            output = model(torch.randn(1, *input_shape))
    except Exception:
        return None
    return ImageByImage(model) if isinstance(output, torch.Tensor) and output.shape[:1] == (1,) else None
