"""Stage `quantize`: INT8 (TensorRT-ready QDQ, or the CPU's fastest format), FP16 and binary weights.

The technique's public functions, for the stage here and for the budget search, which quantises its candidates
exactly as the stage does; other packages import these names from `pipeline.quantize`, never its modules
(tests/test_layers.py). Each is imported on first use, so a module that needs only onnxruntime
(`verify`, run under an emulated CPU by the tests) does not import torch with the package."""

from pipeline.lazy import lazy_exports

__all__ = [
    "CalibrationImages",
    "Int8Settings",
    "convert_fp16",
    "expected_accuracy_drop",
    "load_calibration_images",
    "logits",
    "normalised",
    "quantize_model_int8",
]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "CalibrationImages": "pipeline.quantize.calibration:CalibrationImages",
        "load_calibration_images": "pipeline.quantize.calibration:load_calibration_images",
        "normalised": "pipeline.quantize.calibration:normalised",
        "convert_fp16": "pipeline.quantize.fp16:convert_fp16",
        "Int8Settings": "pipeline.quantize.int8:Int8Settings",
        "quantize_model_int8": "pipeline.quantize.int8_model:quantize_model_int8",
        "expected_accuracy_drop": "pipeline.quantize.verify:expected_accuracy_drop",
        "logits": "pipeline.quantize.verify:logits",
    },
)
