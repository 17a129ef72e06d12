"""TensorRT runner: an engine file run with TensorRT's Python API (10 or 11) and pycuda or cuda-python buffers.

The engine code is `portable.tensorrt_loader.TrtSession`, the same that runs on a device over SSH, so a local and a
remote measurement differ only in where they ran. `tensorrt` is imported lazily (at construction), so
importing this module costs nothing on machines without it. The engine's stamp (`<engine>.json`: TensorRT
version, GPU, compute capability) is checked before loading: a mismatched engine fails with a clear message.
"""

import functools
from pathlib import Path

import numpy as np

from pipeline.errors import MissingDependency, PipelineError, first_line
from pipeline.portable import tensorrt_loader
from pipeline.portable.cuda_buffers import cuda_backend
from pipeline.portable.errors import BenchError
from pipeline.runtimes.base import Runner

TRT_INSTALL = "pip install 'edge-pipeline[trt]' (needs an NVIDIA GPU and TensorRT 10+)"


def import_tensorrt():
    """`portable.tensorrt_loader.import_tensorrt` (the one import) with the package's install hint."""
    try:
        trt = tensorrt_loader.import_tensorrt(install=TRT_INSTALL)
    except BenchError as error:
        raise MissingDependency(str(error)) from None
    # TensorRT < 10 has the binding-index API, not the tensor-name API used here.
    if tensorrt_loader.trt_major(trt) < 10:
        raise MissingDependency(f"tensorrt {trt.__version__} is too old: {TRT_INSTALL}, or time it with trtexec")
    return trt


@functools.lru_cache(maxsize=1)
def tensorrt_available() -> str | None:
    """Why TensorRT cannot run here (None when it can): not installed, too old, or no CUDA device buffers.
    Asked once per process: a build plans several stages around the answer, and asking opens a CUDA context."""
    try:
        import_tensorrt()
    except MissingDependency as error:
        return str(error)
    try:
        cuda_backend().close()
    except Exception as error:  # no driver / no GPU raises the backend's own errors
        return f"no usable CUDA GPU: {first_line(error)}"
    return None


class TensorRtRunner(Runner):
    name = "tensorrt"

    def __init__(self, engine_path: Path, check_stamp: bool = True):
        super().__init__()
        self.trt = import_tensorrt()  # fail at construction, before a stage plans work around the engine
        self.engine_path = Path(engine_path)
        self.check_stamp = check_stamp
        self.session = None

    def activate_impl(self) -> None:
        if not self.engine_path.is_file():
            raise PipelineError(f"TensorRT engine not found: {self.engine_path}")
        try:
            self.session = tensorrt_loader.TrtSession(str(self.engine_path), check_stamp=self.check_stamp)
        except BenchError as error:
            raise PipelineError(str(error)) from None

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self.session.infer(batch)
        except BenchError as error:
            raise PipelineError(str(error)) from None

    def deactivate_impl(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session.cuda.close()
        self.session = None

    def describe_impl(self) -> dict:
        facts = (
            self.session.describe()
            if self.session is not None
            else {"runtime": "tensorrt", "version": str(self.trt.__version__)}
        )
        # TrtSession.infer copies the input to the device and the logits back inside every timed call
        return {**facts, "threads": None, "model": str(self.engine_path), "includes_transfers": True}
