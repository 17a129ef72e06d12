"""Build a TensorRT engine here (the TensorRT Python API, 10 or 11) and check engines against this machine.
(Part of the runtime layer: the engine stage and the measurement layer both build engines through it.)

The builder itself is `portable.tensorrt_loader.build_engine`, shared with the remote harness, so an engine built on the
device over SSH and one built here come from the same code. Engines are tied to the TensorRT version and the
GPU: each gets a stamp `<engine>.json` beside it, and loading checks the stamp first.
"""

import json
from pathlib import Path

from pipeline.errors import MissingDependency, PipelineError
from pipeline.formats import read_format
from pipeline.portable import tensorrt_loader
from pipeline.portable.cuda_buffers import cuda_backend
from pipeline.portable.errors import BenchError
from pipeline.runtimes.tensorrt_runner import TRT_INSTALL, import_tensorrt


def build_engine_file(
    onnx: Path,
    engine: Path,
    *,
    precision: str = "fp32",
    batch: int = 1,
    max_batch: int | None = None,
    workspace_mb: int | None = None,
    dla_core: int | None = None,
    gpu_fallback: bool = True,
    timing_cache: Path | None = None,
    tensorrt_min: str | None = None,
    tensorrt_max: str | None = None,
    measuring: bool = False,
    version_compatible: bool = False,
    hardware_compatible: bool = False,
) -> dict:
    """Build `engine` from `onnx`; returns the stamp. Refuses a TensorRT outside the target's version range.
    `measuring`: an engine that is only timed (a table variant, bench) is built as its ONNX is where TensorRT 11
    cannot build `precision` from it, and its stamp says so; the engine stage's deliverable never is."""
    trt = import_tensorrt()
    from pipeline.versions import version_in_range

    if not version_in_range(str(trt.__version__), tensorrt_min, tensorrt_max):
        raise PipelineError(
            f"TensorRT {trt.__version__} is installed, the target wants {tensorrt_min or 'any'} to "
            f"{tensorrt_max or 'any'}: an engine built here would not load on the device"
        )
    engine.parent.mkdir(parents=True, exist_ok=True)
    try:
        return tensorrt_loader.build_engine(
            str(onnx),
            str(engine),
            precision=precision,
            batch=batch,
            max_batch=max_batch,
            workspace_mb=workspace_mb,
            dla_core=dla_core,
            gpu_fallback=gpu_fallback,
            timing_cache=str(timing_cache) if timing_cache else None,
            measuring=measuring,
            version_compatible=version_compatible,
            hardware_compatible=hardware_compatible,
        )
    except BenchError as error:
        raise PipelineError(str(error)) from None


def read_stamp(engine: Path) -> dict:
    stamp_path = Path(f"{engine}.json")
    if not stamp_path.is_file():
        raise PipelineError(
            f"{engine} has no stamp ({stamp_path.name}): its TensorRT version and GPU are unknown; "
            "rebuild it with `pipeline engine`"
        )
    try:
        stamp = json.loads(stamp_path.read_text())
    except ValueError:
        raise PipelineError(f"{stamp_path} is not valid JSON") from None
    return read_format(
        stamp,
        tensorrt_loader.STAMP_KIND,
        tensorrt_loader.STAMP_VERSION,
        what=str(stamp_path),
        fix="rebuild the engine with `pipeline engine`",
    )


def check_engine_here(engine: Path) -> dict:
    """The engine's stamp, after checking it matches this machine's TensorRT and GPU (clear error otherwise)."""
    stamp = read_stamp(engine)
    try:
        trt = import_tensorrt()
    except MissingDependency:
        raise MissingDependency(
            f"{engine.name} needs TensorRT {stamp.get('tensorrt_version')} on a {stamp.get('gpu_name')}: {TRT_INSTALL}"
        ) from None
    cuda = cuda_backend()
    try:
        problem = tensorrt_loader.stamp_mismatch(stamp, str(trt.__version__), cuda.gpu())
    finally:
        cuda.close()
    if problem:
        raise PipelineError(f"{engine.name}: {problem}")
    return stamp
