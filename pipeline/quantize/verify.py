"""How far a quantised ONNX model is from its fp32 source, measured with onnxruntime (the artifact, not a
PyTorch stand-in): output error and top-1 agreement on unlabelled images, accuracy on a labelled set.

Two ways to run a Q/DQ model, and which one judges it (`judged_as_written`):
- onnxruntime's CPU integer kernels (graph optimised: Q/DQ pairs fused into QLinearConv and friends). That is
  the deployed computation for a CPU target, and it depends on this CPU: without VNNI the u8 x s8 products are
  summed in saturating 16-bit pairs (`cpu_isa.CpuIsa.u8s8_may_saturate`).
- the graph as written (no graph optimisation): QuantizeLinear rounds and clips to int8, DequantizeLinear scales
  back, convolutions run in fp32. That is what TensorRT computes (int8 products with int32 sums, which are
  exact), on any CPU, so a TensorRT-bound model's figures do not depend on the machine that checks it."""

from pathlib import Path

import numpy as np

from pipeline.process_memory import inference_batch
from pipeline.runtimes import OnnxRuntimeRunner

QDQ_AS_WRITTEN = "Q/DQ as written (onnxruntime, no graph optimisation: quantise-dequantise in float, fp32 convolutions)"
ONNXRUNTIME_KERNELS = "onnxruntime CPU integer kernels (graph optimised) on this CPU"


def logits(
    path: Path, images: np.ndarray, threads: int | None = None, batch_size: int | None = None, as_written: bool = False
) -> np.ndarray:
    """The model's outputs on `images`, `batch_size` at a time (None: process_memory.inference_batch);
    `as_written`: no graph optimisation (see the module docstring)."""
    batch_size = inference_batch(images.shape[1:]) if batch_size is None else batch_size
    with OnnxRuntimeRunner(path, threads=threads, optimize_graph=not as_written) as runner:
        return np.concatenate([runner.infer(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def expected_accuracy_drop(reference: np.ndarray, quantised: np.ndarray) -> float:
    """The top-1 accuracy lost if the fp32 model's own probabilities were the true label distribution:
    mean over images of p_fp32(fp32's class) - p_fp32(quantised model's class). Needs no label. A flip on an
    image the fp32 model was unsure about (synthetic images often sit near decision boundaries) costs little;
    a flip on a confident image costs almost a whole image. The plain disagreement rate is far more
    pessimistic: on the embedded ResNet-20, INT8 changed 1.4 % of top-1 classes on synthetic images while
    its Fashion-MNIST accuracy moved by 0.05 points."""
    shifted = reference - reference.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    rows = np.arange(len(reference))
    return float((probabilities[rows, reference.argmax(1)] - probabilities[rows, quantised.argmax(1)]).mean())


def output_error(reference: np.ndarray, quantised: np.ndarray) -> dict:
    """Logit error relative to the reference logits' spread, how often the top-1 class changes, and the
    label-free estimate of the accuracy drop (`expected_accuracy_drop`)."""
    difference = quantised - reference
    return {
        "expected_accuracy_drop": expected_accuracy_drop(reference, quantised),
        "max_abs_diff": float(np.abs(difference).max()),
        "mean_abs_diff": float(np.abs(difference).mean()),
        "relative_mse": float((difference**2).mean() / max(float(reference.var()), 1e-12)),
        "top1_agreement": float((quantised.argmax(1) == reference.argmax(1)).mean()),
        "images": int(len(reference)),
    }
