"""TensorRT 10 runner: deserialize an engine file and run it with the name-based tensor API
(set_input_shape / set_tensor_address / execute_async_v3).

I/O buffers are torch CUDA tensors, so no pycuda or cuda-python is needed at run time. `tensorrt` is
imported lazily (in the constructor), so importing this module costs nothing on machines without it.
Not exercised on the development machine (no GPU there); tests skip with a reason when TensorRT is absent.
"""

from pathlib import Path

import numpy as np
import torch

from pipeline.errors import MissingDependency, PipelineError
from pipeline.lazy import lazy_import
from pipeline.runtimes.base import Runner

TRT_INSTALL = "pip install 'edge-pipeline[trt]' (needs an NVIDIA GPU and TensorRT 10+)"


def import_tensorrt():
    trt = lazy_import("tensorrt", install=TRT_INSTALL)
    # TensorRT < 10 has the binding-index API, not the tensor-name API used below.
    if int(str(trt.__version__).split(".")[0]) < 10:
        raise MissingDependency(f"tensorrt {trt.__version__} is too old: {TRT_INSTALL}")
    return trt


class TensorRtRunner(Runner):
    name = "tensorrt"
    _MAX_CACHED_SHAPES = 4  # parity runs a few batch sizes; latency runs one

    def __init__(self, engine_path: Path, device: int = 0):
        super().__init__()
        self.trt = import_tensorrt()  # fail at construction, before a stage plans work around the engine
        self.engine_path = Path(engine_path)
        self.device = torch.device("cuda", device)
        self.engine = self.context = self.stream = None
        self._buffers: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def activate_impl(self) -> None:
        trt = self.trt
        if not torch.cuda.is_available():
            raise PipelineError("TensorRT needs a CUDA GPU, and torch sees none")
        if not self.engine_path.is_file():
            raise PipelineError(f"TensorRT engine not found: {self.engine_path}")
        self.logger = trt.Logger(trt.Logger.ERROR)
        self.runtime = trt.Runtime(self.logger)  # must outlive the engine
        self.engine = self.runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            raise PipelineError(f"cannot deserialize {self.engine_path}: engines only load on the TensorRT version "
                                f"and GPU family they were built with (this is TensorRT {trt.__version__})")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise PipelineError(f"{self.engine_path} has {len(inputs)} inputs and {len(outputs)} outputs; expected 1 and 1")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(device=self.device)
        self._buffers = {}

    def _torch_dtype(self, tensor_name: str) -> torch.dtype:
        numpy_dtype = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(tensor_name)))
        return torch.from_numpy(np.empty(0, dtype=numpy_dtype)).dtype

    def _io_buffers(self, shape: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """Device buffers per input shape, allocated once so timed runs exclude cudaMalloc."""
        if shape not in self._buffers:
            if len(self._buffers) >= self._MAX_CACHED_SHAPES:
                self._buffers.clear()
            if not self.context.set_input_shape(self.input_name, shape):
                raise PipelineError(f"input shape {shape} is outside the engine's optimisation profile")
            output_shape = tuple(self.context.get_tensor_shape(self.output_name))
            if any(d < 0 for d in output_shape):
                raise PipelineError(f"TensorRT could not resolve the output shape for input {shape}")
            self._buffers[shape] = (
                torch.empty(shape, dtype=self._torch_dtype(self.input_name), device=self.device),
                torch.empty(output_shape, dtype=self._torch_dtype(self.output_name), device=self.device),
            )
        return self._buffers[shape]

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        shape = tuple(batch.shape)
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            device_in, device_out = self._io_buffers(shape)
            # The context holds one shape at a time: set it on every call since batches may alternate.
            if not self.context.set_input_shape(self.input_name, shape):
                raise PipelineError(f"input shape {shape} is outside the engine's optimisation profile")
            self.context.set_tensor_address(self.input_name, device_in.data_ptr())
            self.context.set_tensor_address(self.output_name, device_out.data_ptr())
            device_in.copy_(torch.from_numpy(batch))  # host-to-device on self.stream (casts if the engine is FP16 I/O)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise PipelineError(f"TensorRT execution failed for {self.engine_path.name}")
            result = device_out.float().cpu()  # device-to-host on the same stream, so it waits for the engine
        self.stream.synchronize()
        return result.numpy()

    def deactivate_impl(self) -> None:
        # Drop references in dependency order: buffers and context before the engine, engine before the runtime.
        self._buffers = {}
        self.context = None
        self.engine = None
        self.stream = None

    def describe_impl(self) -> dict:
        gpu = torch.cuda.get_device_name(self.device) if torch.cuda.is_available() else None
        return {"runtime": "tensorrt", "version": str(self.trt.__version__), "threads": None,
                "device": gpu, "model": str(self.engine_path)}
