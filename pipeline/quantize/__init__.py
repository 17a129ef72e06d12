"""Stage `quantize`: INT8 (TensorRT-ready QDQ, or the CPU's fastest format), FP16 and binary weights.

The technique's public functions, for the stage here and for the budget search, which quantises its candidates
exactly as the stage does; other packages import these names from `pipeline.quantize`, never its modules
(tests/test_layers.py)."""

from pipeline.quantize.calibration import CalibrationImages, load_calibration_images, normalised
from pipeline.quantize.fp16 import convert_fp16
from pipeline.quantize.int8 import Int8Settings
from pipeline.quantize.int8_model import quantize_model_int8
from pipeline.quantize.verify import expected_accuracy_drop, logits

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
