"""CUDA device buffers for TensorRT: pycuda or cuda-python, whichever is installed (TensorRT itself allocates
nothing for us)."""

from __future__ import annotations  # Python 3.8 on JetPack 5

from .errors import BenchError


class _PyCuda:
    name = "pycuda"

    def __init__(self):
        import pycuda.driver as cuda

        cuda.init()
        self.cuda = cuda
        self.device = cuda.Device(0)
        self.context = self.device.retain_primary_context()
        self.context.push()
        self.stream = cuda.Stream()
        self.live = []  # every buffer not freed yet: close() frees what a session left

    def malloc(self, nbytes):
        buffer = self.cuda.mem_alloc(max(1, nbytes))
        self.live.append(buffer)
        return buffer

    def free(self, buffer):
        if buffer in self.live:
            self.live.remove(buffer)
            buffer.free()

    def pointer(self, buffer):
        return int(buffer)

    def stream_handle(self):
        return self.stream.handle

    def to_device(self, buffer, host):
        self.cuda.memcpy_htod_async(buffer, host, self.stream)

    def to_host(self, host, buffer):
        self.cuda.memcpy_dtoh_async(host, buffer, self.stream)

    def synchronize(self):
        self.stream.synchronize()

    def gpu(self):
        major, minor = self.device.compute_capability()
        return {"gpu_name": self.device.name(), "compute_capability": f"{major}.{minor}"}

    def close(self):
        for buffer in list(self.live):
            self.free(buffer)
        self.context.pop()


class _CudaPython:
    name = "cuda-python"

    def __init__(self):
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart
        self.cudart = cudart
        self.stream = self._check(cudart.cudaStreamCreate())
        self.live = []  # every buffer not freed yet: close() frees what a session left

    def _check(self, result):
        error, *values = result if isinstance(result, tuple) else (result,)
        if int(error) != 0:
            raise BenchError(f"CUDA error {error}")
        return values[0] if len(values) == 1 else values

    def malloc(self, nbytes):
        buffer = self._check(self.cudart.cudaMalloc(max(1, nbytes)))
        self.live.append(buffer)
        return buffer

    def free(self, buffer):
        if buffer in self.live:
            self.live.remove(buffer)
            self._check(self.cudart.cudaFree(buffer))

    def pointer(self, buffer):
        return int(buffer)

    def stream_handle(self):
        return int(self.stream)

    def to_device(self, buffer, host):
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.cudart.cudaMemcpyAsync(buffer, host.ctypes.data, host.nbytes, kind, self.stream))

    def to_host(self, host, buffer):
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.cudart.cudaMemcpyAsync(host.ctypes.data, buffer, host.nbytes, kind, self.stream))

    def synchronize(self):
        self._check(self.cudart.cudaStreamSynchronize(self.stream))

    def gpu(self):
        props = self._check(self.cudart.cudaGetDeviceProperties(0))
        name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
        return {"gpu_name": name, "compute_capability": f"{props.major}.{props.minor}"}

    def close(self):
        for buffer in list(self.live):
            self.free(buffer)
        self.cudart.cudaStreamDestroy(self.stream)


def cuda_backend():
    """pycuda when importable, else cuda-python; a one-line error naming both when neither is."""
    for backend in (_PyCuda, _CudaPython):
        try:
            return backend()
        except ImportError:
            continue
    raise BenchError("TensorRT needs pycuda or cuda-python for device buffers: pip install pycuda (or cuda-python)")
