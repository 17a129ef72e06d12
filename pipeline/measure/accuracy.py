"""Top-1 accuracy through a Runner, so the number describes the artifact we ship (ONNX/TensorRT),
not the PyTorch module it came from."""

from contextlib import nullcontext

import numpy as np
import torch

from pipeline.errors import PipelineError
from pipeline.process_memory import inference_batch
from pipeline.runtimes.base import Runner


def _to_numpy(array, dtype) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    return np.asarray(array, dtype=dtype)


def predictions_with_runner(
    runner: Runner, images: torch.Tensor | np.ndarray, batch_size: int | None = None
) -> np.ndarray:
    """Arg-max class per image (int64), inferred in batches of `batch_size` (the last one may be smaller;
    None: as many as the input size allows, process_memory.inference_batch), converted a batch at a time."""
    if len(images) == 0:
        raise PipelineError("no images to predict")
    batch_size = inference_batch(images.shape[1:]) if batch_size is None else batch_size
    if batch_size < 1:
        raise PipelineError(f"batch_size must be >= 1, got {batch_size}")
    scope = nullcontext(runner) if runner.is_active else runner
    with scope:
        return np.concatenate(
            [
                runner.infer(_to_numpy(images[i : i + batch_size], np.float32)).argmax(axis=1)
                for i in range(0, len(images), batch_size)
            ]
        ).astype(np.int64)


def accuracy_with_runner(
    runner: Runner,
    images: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    batch_size: int | None = None,
) -> float:
    labels = _to_numpy(labels, np.int64).reshape(-1)
    if len(labels) != len(images):
        raise PipelineError(f"{len(images)} images but {len(labels)} labels")
    return float((predictions_with_runner(runner, images, batch_size) == labels).mean())
