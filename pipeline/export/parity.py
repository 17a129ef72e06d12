"""Does the ONNX file compute what the PyTorch model computes? Compared on every input source given
(e.g. synthetic noise and real images), through the same runners the benchmarks use.

Pass criterion, per source s:   max |onnx - torch| <= tolerance * max(1, max |torch logit| over s)
i.e. an absolute tolerance for logits of order 1 that grows with the logits' magnitude, because float32
rounding error scales with the values (a ResNet-50 with logits ~100 legitimately differs by ~1e-5..1e-4 after
operator fusion). Top-1 agreement is reported but not part of the criterion: with near-ties, a 1e-6
difference may flip an arg-max without anything being wrong; a real defect shows up in the difference.
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from pipeline.errors import ParityError, PipelineError
from pipeline.runtimes import OnnxRuntimeRunner, TorchRunner


@dataclass
class ParityReport:
    max_abs_diff: float  # over every source and sample (inf if the ONNX output had NaN/inf where torch did not)
    mean_abs_diff: float
    top1_agreement: float  # fraction of samples with the same arg-max
    samples: int
    tolerance: float
    passed: bool
    per_source: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _batched(runner, images: np.ndarray, batch_size: int) -> tuple[np.ndarray, list[int]]:
    chunks = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    return np.concatenate([runner.infer(chunk) for chunk in chunks]), [len(chunk) for chunk in chunks]


def _abs_diff(a: np.ndarray, b: np.ndarray, source: str) -> np.ndarray:
    if a.shape != b.shape:
        raise ParityError(f"ONNX output shape {a.shape} differs from PyTorch's {b.shape} on {source!r} inputs")
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    diff[~np.isfinite(diff)] = np.inf  # NaN on one side only: never a pass
    return diff


def _compare_source(
    torch_runner, onnx_runner, images: np.ndarray, source: str, tolerance: float, batch_size: int
) -> dict:
    reference, _ = _batched(torch_runner, images, batch_size)
    exported, sizes = _batched(onnx_runner, images, batch_size)
    # The first sample again on its own: with the batched pass this runs >= 2 batch sizes through the
    # dynamic batch dimension whenever a source has 2+ samples.
    single = onnx_runner.infer(images[:1])
    diff = _abs_diff(exported, reference, source)
    single_diff = _abs_diff(single, reference[:1], source)
    max_diff = float(max(diff.max(), single_diff.max()))
    scale = max(1.0, float(np.abs(reference).max()))
    return {
        "samples": len(images),
        "max_abs_diff": max_diff,
        "mean_abs_diff": float(diff.mean()),
        "top1_agreement": float((exported.argmax(1) == reference.argmax(1)).mean()),
        "max_abs_logit": float(np.abs(reference).max()),
        "allowed_abs_diff": tolerance * scale,
        "batch_sizes": sorted({1, *sizes}),
        "passed": bool(max_diff <= tolerance * scale),
    }


def check_parity(
    model: nn.Module,
    onnx_path: Path,
    inputs: dict[str, torch.Tensor],
    *,
    tolerance: float = 1e-4,
    threads: int | None = None,
    batch_size: int = 64,
) -> ParityReport:
    """Run `model` and the ONNX file on every source in `inputs` ({name: NCHW float tensor}) and compare logits."""
    if not inputs:
        raise PipelineError("parity needs at least one input source")
    per_source = {}
    with (
        TorchRunner(model, threads=threads) as torch_runner,
        OnnxRuntimeRunner(onnx_path, threads=threads) as onnx_runner,
    ):
        for source, images in inputs.items():
            images = np.ascontiguousarray(
                images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else images, dtype=np.float32
            )
            if len(images) == 0:
                raise PipelineError(f"parity source {source!r} has no samples")
            per_source[source] = _compare_source(torch_runner, onnx_runner, images, source, tolerance, batch_size)
    samples = sum(s["samples"] for s in per_source.values())
    weighted = [s["mean_abs_diff"] * s["samples"] for s in per_source.values()]
    return ParityReport(
        max_abs_diff=max(s["max_abs_diff"] for s in per_source.values()),
        mean_abs_diff=float(sum(weighted) / samples),
        top1_agreement=float(sum(s["top1_agreement"] * s["samples"] for s in per_source.values()) / samples),
        samples=samples,
        tolerance=tolerance,
        passed=all(s["passed"] for s in per_source.values()),
        per_source=per_source,
    )


def raise_on_failure(report: ParityReport, model_name: str) -> None:
    """ParityError (one line: model, worst difference, what was allowed) unless the report passed."""
    if report.passed:
        return
    source, worst = max(
        ((name, s) for name, s in report.per_source.items() if not s["passed"]),
        key=lambda item: item[1]["max_abs_diff"] / item[1]["allowed_abs_diff"],
    )
    raise ParityError(
        f"{model_name}: ONNX output differs from PyTorch by up to {worst['max_abs_diff']:.3g} on "
        f"{source!r} inputs, above the tolerance {report.tolerance:g} x max(1, max |logit| "
        f"{worst['max_abs_logit']:.3g}) = {worst['allowed_abs_diff']:.3g}"
    )
