"""TensorRT engines: pre-flight checks without TensorRT, the builder (TensorRT 10 and 11), engine stamps."""
