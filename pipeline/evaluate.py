"""Top-1 accuracy of a PyTorch module on an already-normalised labelled tensor set."""

import torch

from pipeline.process_memory import inference_batch


@torch.no_grad()
def predict_torch(model: torch.nn.Module, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Predicted classes (on the CPU); batches (None: as the input size allows) go to the model's device.
    Leaves the model in eval mode."""
    batch_size = inference_batch(images.shape[1:], largest=500) if batch_size is None else batch_size
    model.eval()
    device = next(model.parameters()).device
    return torch.cat(
        [model(images[i : i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(images), batch_size)]
    )


def accuracy_torch(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int | None = None
) -> float:
    return float((predict_torch(model, images, batch_size) == labels).float().mean())
