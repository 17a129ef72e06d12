"""Accuracy repair for INT8: when quantising everything changes too many predictions, find the layers that
hurt most and keep them in float.

Sensitivity of a layer = the output error (relative logit MSE against fp32) when *only that layer* is
quantised, on held-back synthetic images. Layers are then kept in float, worst first, until the estimated
accuracy drop on those images (`verify.expected_accuracy_drop`, label-free) is within `--max-accuracy-drop`."""

from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.progress import log, progress_bar
from pipeline.quantize.verify import output_error

# quantise(out_path, exclude=[...], only=[...]) -> out_path ; logits_of(path) -> logits on the held-back images
Quantiser = Callable[..., Path]


def layer_sensitivity(
    layers: list[str], quantise: Quantiser, logits_of: Callable[[Path], np.ndarray], reference: np.ndarray, folder: Path
) -> list[dict]:
    rows = []
    with progress_bar("int8: per-layer sensitivity", len(layers)) as bar:
        for index, layer in enumerate(layers):
            path = quantise(folder / f"only-{index}.onnx", only=[layer])
            error = output_error(reference, logits_of(path))
            rows.append(
                {"layer": layer, "relative_mse": error["relative_mse"], "top1_agreement": error["top1_agreement"]}
            )
            path.unlink(missing_ok=True)
            bar.advance()
    return sorted(rows, key=lambda row: row["relative_mse"], reverse=True)


def repair(
    layers: list[str],
    quantise: Quantiser,
    logits_of: Callable[[Path], np.ndarray],
    reference: np.ndarray,
    max_drop: float,
    folder: Path,
    out: Path,
) -> dict:
    """Quantise with the worst layers in float until the estimated drop <= max_drop (a fraction). Returns the report;
    the model written last to `out` is the one handed on."""
    sensitivity = layer_sensitivity(layers, quantise, logits_of, reference, folder)
    kept: list[str] = []
    steps = []
    for row in sensitivity:
        kept.append(row["layer"])
        quantise(out, exclude=kept)
        error = output_error(reference, logits_of(out))
        steps.append({"float_layers": list(kept), **error})
        log(
            f"int8: {len(kept)} layer(s) in float ({row['layer']} last): estimated accuracy drop "
            f"{100 * error['expected_accuracy_drop']:.2f} points (budget {100 * max_drop:.2f})"
        )
        if error["expected_accuracy_drop"] <= max_drop:
            return {"sensitivity": sensitivity, "steps": steps, "float_layers": kept, "met": True}
    return {"sensitivity": sensitivity, "steps": steps, "float_layers": kept, "met": False}
