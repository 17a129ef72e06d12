"""How much memory a training step takes per image: the tensors autograd keeps for the backward pass, counted
(not guessed) through `saved_tensors_hooks`, each storage once, at batch 2 and 4: the difference is what one
more image adds (the weights autograd also keeps are the same at any batch).

A step holds more than that while its backward pass runs (the activations' gradients, the augmented copies of
a KD batch): a synthesis step of a torchvision ResNet-34 at 224 px keeps 27 MiB per image by this count, its
process grew by 44 MiB per image between batch 32 and 128 (peak RSS 2.5 and 6.7 GiB), and `pipeline distill
--steps 2` on it with a ResNet-18 student peaked at 6.0 GiB at batch 64 where twice the count predicted 5.3
(Intel Xeon, 2 cores): BACKWARD_FACTOR is set from that run.
"""

import torch
import torch.nn as nn

BACKWARD_FACTOR = 3.0  # what a step holds per image over what autograd saves (measured: see above)


def saved_bytes_per_image(model: nn.Module, input_shape, *, input_grad: bool, train: bool) -> int:
    """Bytes one more image adds to a step: through the inputs (`input_grad`, synthesis) or through the weights
    in training mode (`train`, a student's KD step), times BACKWARD_FACTOR. The model's mode is restored."""
    was_training = model.training
    model.train(train)
    try:
        two, four = (_saved_bytes(model, input_shape, batch, input_grad) for batch in (2, 4))
    finally:
        model.train(was_training)
    return int(BACKWARD_FACTOR * max(0, four - two) / 2)


def _saved_bytes(model: nn.Module, input_shape, batch: int, input_grad: bool) -> int:
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
        return tensor

    images = torch.randn(batch, *input_shape, requires_grad=input_grad)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = model(images)
    del output
    return sum(storages.values())
