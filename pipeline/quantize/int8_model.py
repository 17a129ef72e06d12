"""INT8 for a deployment target, as one public technique: the quantize stage and the budget search both call
`quantize_model_int8`, so the model the search measured is the one the quantize stage hands on.

The format follows the runtime (symmetric S8S8 Q/DQ for TensorRT; for onnxruntime on a CPU, the candidate
format measured fastest here), the calibration set is the caller's, and the layers that cost too much
accuracy (estimated without labels) are put back in float."""

import shutil
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.measure import LatencySettings, example_input, time_onnx_models
from pipeline.progress import log
from pipeline.quantize.calibration import CalibrationImages
from pipeline.quantize.compact import compact_quantized
from pipeline.quantize.cpu_isa import detect_cpu_isa
from pipeline.quantize.int8 import (
    TENSORRT_QDQ,
    Int8Settings,
    count_ops,
    cpu_candidates,
    prepare_for_quantization,
    quantize_int8,
    tensorrt_qdq_problems,
    weighted_nodes,
)
from pipeline.quantize.sensitivity import repair
from pipeline.quantize.verify import logits, output_error
from pipeline.runtimes import judged_as_written

DEFAULT_MAX_ACCURACY_DROP = 0.5  # top-1 points, estimated without labels on held-back images (verify.py)


def quantize_model_int8(
    fp32: Path,
    out: Path,
    images: CalibrationImages,
    preprocess,
    scratch: Path,
    *,
    runtime: str,
    settings: Int8Settings,
    latency: LatencySettings,
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP,
    repair_allowed: bool = True,
    format_name: str | None = None,
) -> dict:
    """Write the INT8 model of `fp32` to `out`; return what was chosen and estimated (format, ISA, float layers).

    `max_accuracy_drop` is in top-1 points; `format_name` uses that format instead of timing every candidate
    (the budget search times them once on the full model and reuses the winner for every smaller one)."""
    prepared = prepare_for_quantization(fp32, scratch / "prepared.onnx")
    cache = scratch  # calibration ranges: computed once per run, shared by the formats and the repair probes
    isa = detect_cpu_isa()
    formats = [TENSORRT_QDQ] if runtime == "tensorrt" else cpu_candidates(isa)
    if format_name is not None:
        formats = [fmt for fmt in formats if fmt.name == format_name] or formats
    candidates = {
        fmt.name: quantize_int8(prepared, scratch / f"{fmt.name}.onnx", fmt, settings, images.calibration, cache)
        for fmt in formats
    }
    choice = {"candidates": [fmt.to_dict() for fmt in formats]}
    fmt = formats[0]
    if len(formats) > 1:  # the fastest on this CPU, measured: instruction sets alone mispredict it
        timed = time_onnx_models(
            {"fp32": fp32, **candidates},
            latency,
            example_input(latency, preprocess),
            latency.rounds,
            label="int8: timing candidate formats",
        )
        fmt = min(formats, key=lambda f: timed[f.name]["median_ms"])
        choice["timing_ms"] = {name: entry["median_ms"] for name, entry in timed.items()}
        log(
            "int8: candidate formats "
            + ", ".join(f"{name} {ms:.3f} ms" for name, ms in choice["timing_ms"].items())
            + f"; chose {fmt.name}"
        )
    shutil.copy(candidates[fmt.name], out)
    # a TensorRT-bound model is judged (and repaired) by its Q/DQ graph as written: this CPU's integer
    # kernels would make the choice of float layers depend on whether the CPU has VNNI (verify.py)
    as_written = judged_as_written(runtime, "int8")

    def quantised_logits(path: Path):
        return logits(path, images.held_back, as_written=as_written)

    reference = logits(fp32, images.held_back)
    error = output_error(reference, quantised_logits(out))
    details = {"format": fmt.to_dict(), "isa": isa.to_dict(), "format_choice": choice, "float_layers": []}
    budget = max_accuracy_drop / 100
    details["estimated_accuracy_drop_points"] = 100 * error["expected_accuracy_drop"]
    if repair_allowed and error["expected_accuracy_drop"] > budget:
        log(
            f"int8: estimated accuracy drop {100 * error['expected_accuracy_drop']:.2f} points exceeds "
            f"--max-accuracy-drop {max_accuracy_drop}; measuring per-layer sensitivity"
        )

        def quantise(path: Path, exclude=None, only=None) -> Path:
            return quantize_int8(prepared, path, fmt, settings, images.calibration, cache, exclude, only)

        fixed = repair(weighted_nodes(prepared), quantise, quantised_logits, reference, budget, scratch, out)
        details.update(repair=fixed, float_layers=fixed["float_layers"])
        if not fixed["met"]:
            log(
                f"int8: warning: even with {len(fixed['float_layers'])} layers in float the estimated drop "
                f"exceeds {max_accuracy_drop} points"
            )
    details["compacted_bytes"] = compact_quantized(out, prepared)
    details["ops"] = count_ops(out)
    if fmt.tensorrt_legal:
        problems = tensorrt_qdq_problems(out)
        if problems:
            raise PipelineError(f"the INT8 model is not TensorRT-ready: {problems[0]}")
    return details
