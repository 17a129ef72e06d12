"""Stage `quantize`: INT8 (TensorRT-ready QDQ, or the CPU's fastest format), FP16 and binary weights."""
