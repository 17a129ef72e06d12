"""Runners (PyTorch, ONNX Runtime, TensorRT) and the shared latency / accuracy routines."""

import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from pipeline.errors import MissingDependency, PipelineError
from pipeline.export import export_onnx
from pipeline.measure import accuracy_with_runner, measure_latency, predictions_with_runner
from pipeline.models import create_model
from pipeline.preprocess import default_preprocess
from pipeline.runtimes import (
    TRT_INSTALL,
    OnnxRuntimeRunner,
    Runner,
    TensorRtRunner,
    TorchRunner,
)


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("lenet5", in_channels=1, num_classes=10).eval()
    preprocess = default_preprocess(1, 28, 28)
    path = tmp_path_factory.mktemp("onnx") / "lenet5.onnx"
    export_onnx(model, preprocess, path, exporter="torchscript")
    images = torch.randn(37, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    return model, path, images


class SleepRunner(Runner):
    """Counts calls and takes a known time, so timing logic is tested without a model's noise."""

    name = "sleep"

    def __init__(self, seconds: float, slow_first: int = 0):
        super().__init__()
        self.seconds, self.slow_first, self.calls, self.activations = seconds, slow_first, 0, 0

    def activate_impl(self):
        self.activations += 1

    def infer_impl(self, batch):
        self.calls += 1
        time.sleep(0.05 if self.calls <= self.slow_first else self.seconds)
        return np.zeros((len(batch), 10), np.float32)

    def deactivate_impl(self):
        pass

    def describe_impl(self):
        return {"runtime": "sleep"}


def test_runners_agree(lenet):
    model, path, images = lenet
    batch = images[:5].numpy()
    threads_before = torch.get_num_threads()
    model.train()
    with TorchRunner(model, threads=1) as torch_runner, OnnxRuntimeRunner(path, threads=1) as ort_runner:
        assert torch.get_num_threads() == 1 and not model.training
        expected, got = torch_runner.infer(batch), ort_runner.infer(batch)
        single = ort_runner.infer(batch[:1])
        described = ort_runner.describe()
    assert torch.get_num_threads() == threads_before and model.training  # both restored on exit
    model.eval()
    assert got.shape == (5, 10) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-4
    assert np.abs(single - expected[:1]).max() <= 1e-4
    assert described["runtime"] == "onnxruntime" and described["threads"] == 1
    assert described["providers"] == ["CPUExecutionProvider"] and described["version"]


def test_runner_must_be_active(lenet):
    _, path, images = lenet
    with pytest.raises(PipelineError, match="not active"):
        OnnxRuntimeRunner(path).infer(images[:1].numpy())


def test_onnxruntime_errors_are_one_line(lenet, tmp_path):
    _, path, images = lenet
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(path.read_bytes()[:200])
    for bad in (corrupt, tmp_path / "missing.onnx"):
        with pytest.raises(PipelineError) as error:
            OnnxRuntimeRunner(bad).activate()
        assert "\n" not in str(error.value) and str(bad) in str(error.value)
    with OnnxRuntimeRunner(path) as runner, pytest.raises(PipelineError, match="onnxruntime failed"):
        runner.infer(np.zeros((1, 3, 28, 28), np.float32))  # wrong channel count


@pytest.mark.skipif(
    "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers(),
    reason="this onnxruntime has CUDA, so there is no fallback to observe",
)
def test_unavailable_provider_falls_back_to_cpu(lenet):
    _, path, images = lenet
    with OnnxRuntimeRunner(path, providers=["CUDAExecutionProvider"]) as runner:
        assert runner.describe()["providers"] == ["CPUExecutionProvider"]
        assert runner.infer(images[:2].numpy()).shape == (2, 10)


def test_every_onnxruntime_session_stops_its_threads_spinning_between_runs(lenet):
    """An idle session's spinning workers would take a core from the next session in an interleaved round."""
    from pipeline.portable.onnxruntime_loader import onnxruntime_session

    _, path, images = lenet
    for threads in (1, 2):
        session = onnxruntime_session(str(path), threads)
        assert session.get_session_options().get_session_config_entry("session.force_spinning_stop") == "1"
        assert session.run(None, {session.get_inputs()[0].name: images[:1].numpy()})[0].shape == (1, 10)


def test_latency_stats_are_sane():
    runner = SleepRunner(0.001, slow_first=5)  # the warm-up calls are the slow ones (50 ms)
    stats = measure_latency(runner, np.zeros((2, 1, 8, 8), np.float32), warmup=5, runs=30)
    assert runner.calls == 35 and runner.activations == 1 and not runner.is_active  # activated for the run only
    assert (stats.runs, stats.warmup, stats.batch) == (30, 5, 2)
    assert 1.0 <= stats.min_ms <= stats.median_ms <= stats.p90_ms <= stats.p99_ms <= stats.max_ms
    assert stats.max_ms < 40, "a warm-up call was timed"
    assert stats.mean_ms > 0 and stats.cv >= 0
    assert set(stats.to_dict()) >= {"median_ms", "p90_ms", "p99_ms", "cv", "runs", "warmup", "batch"}


def test_latency_max_seconds_stops_early_but_keeps_ten_runs():
    runner = SleepRunner(0.005)
    stats = measure_latency(runner, np.zeros((1, 1, 8, 8), np.float32), warmup=2, runs=10_000, max_seconds=0.2)
    assert 10 <= stats.runs < 200 and runner.calls == stats.runs + 2
    stats = measure_latency(SleepRunner(0.0), np.zeros((1, 1, 8, 8), np.float32), warmup=0, runs=500, max_seconds=0)
    assert stats.runs == 10  # budget already spent: the minimum sample count
    with pytest.raises(PipelineError):
        measure_latency(runner, np.zeros((1, 1, 8, 8), np.float32), runs=0)


def test_latency_of_a_real_runner(lenet):
    _, path, images = lenet
    with OnnxRuntimeRunner(path, threads=1) as runner:
        stats = measure_latency(runner, images[:4].numpy(), warmup=3, runs=20)
        assert runner.is_active  # an active runner is left active
    assert stats.runs == 20 and stats.batch == 4 and 0 < stats.median_ms <= stats.p90_ms <= stats.p99_ms


def test_accuracy_with_runner(lenet):
    model, path, images = lenet
    with torch.no_grad():
        labels = model(images).argmax(1)
    runner = OnnxRuntimeRunner(path, threads=1)
    # 37 images in batches of 8: the last batch is partial.
    assert np.array_equal(predictions_with_runner(runner, images, batch_size=8), labels.numpy())
    assert accuracy_with_runner(runner, images.numpy(), labels, batch_size=8) == 1.0
    assert accuracy_with_runner(TorchRunner(model), images, (labels + 1) % 10) == 0.0
    with pytest.raises(PipelineError, match="labels"):
        accuracy_with_runner(runner, images, labels[:5])


def test_tensorrt_missing_dependency_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail even where it is installed
    with pytest.raises(MissingDependency) as error:
        TensorRtRunner("model.engine")
    assert TRT_INSTALL in str(error.value) and "\n" not in str(error.value)


def test_importing_runtimes_does_not_import_tensorrt():
    # every public name, since each is imported on first use
    code = (
        "import sys, pipeline.runtimes as r, pipeline.measure\n"
        "[getattr(r, name) for name in r.__all__]\n"
        "assert 'tensorrt' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_public_names_resolve_on_first_use_and_the_onnxruntime_check_imports_no_torch():
    """The packages' public names are imported lazily: each must still resolve, an unknown one must raise
    AttributeError, and the INT8 check the emulated-CPU test runs under qemu must not drag torch in."""
    import pipeline.quantize
    import pipeline.runtimes
    import pipeline.synthesize

    for package in (pipeline.runtimes, pipeline.quantize, pipeline.synthesize):
        for name in package.__all__:
            getattr(package, name)  # a name mapped to the wrong module raises here
        assert set(package.__all__) <= set(dir(package))
        with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
            package.nothing  # noqa: B018
    code = "import sys, pipeline.quantize.verify; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _tensorrt_skip_reason() -> str | None:
    from pipeline.runtimes import tensorrt_available

    return tensorrt_available()


@pytest.mark.tensorrt
@pytest.mark.skipif(_tensorrt_skip_reason() is not None, reason=f"TensorRT cannot run here: {_tensorrt_skip_reason()}")
def test_tensorrt_runner_matches_onnxruntime(lenet, tmp_path):
    from pipeline.runtimes.tensorrt_engine import build_engine_file

    _, path, images = lenet
    engine_path = tmp_path / "lenet5.engine"
    # plain FP32 (the builder clears TF32), so onnxruntime's outputs are a fair reference
    stamp = build_engine_file(
        path, engine_path, precision="fp32", batch=8, max_batch=64, timing_cache=tmp_path / "t.cache"
    )
    assert stamp["profile"] == [[1, 1, 28, 28], [8, 1, 28, 28], [64, 1, 28, 28]]
    assert (tmp_path / "t.cache").is_file()
    with TensorRtRunner(engine_path) as trt_runner, OnnxRuntimeRunner(path) as ort_runner:
        for batch in (images[:1].numpy(), images[:7].numpy(), images[:1].numpy()):  # shapes alternate
            assert np.abs(trt_runner.infer(batch) - ort_runner.infer(batch)).max() <= 1e-3
        assert trt_runner.describe()["runtime"] == "tensorrt"
        assert measure_latency(trt_runner, images[:4].numpy(), warmup=3, runs=10).runs == 10


def test_one_rule_says_when_a_model_runs_as_written():
    from pipeline.runtimes import judged_as_written

    assert judged_as_written("tensorrt", "int8") and judged_as_written("tensorrt", "binary")
    assert not judged_as_written("onnxruntime", "int8")  # the cpu target runs onnxruntime's own kernels
    assert not judged_as_written("tensorrt", "fp16") and not judged_as_written("tensorrt", "fp32")


@pytest.mark.parametrize("name, channels, size", [("resnet20", 1, 28), ("resnet18", 3, 64), ("mobilenet_v2", 3, 64)])
def test_flops_counted_from_the_onnx_graph_match_torchs_counter_in_float_and_int8(name, channels, size, tmp_path):
    """`latency_record`'s flops: Conv/Gemm/MatMul of the ONNX graph, equal to torch.utils.flop_counter on the
    PyTorch model, and unchanged by INT8 (Q/DQ pairs and integer operators do the same arithmetic)."""
    import numpy as np
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.export import export_onnx
    from pipeline.measure import onnx_flops
    from pipeline.models import create_model
    from pipeline.preprocess import default_preprocess
    from pipeline.quantize.int8 import TENSORRT_QDQ, Int8Format, Int8Settings, prepare_for_quantization, quantize_int8

    model = create_model(name, in_channels=channels, num_classes=10, image_size=size).eval()
    export_onnx(model, default_preprocess(channels, size, size), tmp_path / "fp32.onnx", exporter="torchscript")
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, channels, size, size))
    assert onnx_flops(tmp_path / "fp32.onnx") == counter.get_total_flops() > 0
    if name != "resnet20":
        return
    prepared = prepare_for_quantization(tmp_path / "fp32.onnx", tmp_path / "prepared.onnx")
    calibration = np.random.default_rng(0).standard_normal((8, channels, size, size)).astype(np.float32)
    for fmt in (TENSORRT_QDQ, Int8Format("u8s8-qoperator", "u8", "qoperator", False)):
        quantized = quantize_int8(prepared, tmp_path / f"{fmt.name}.onnx", fmt, Int8Settings(), calibration, tmp_path)
        assert onnx_flops(quantized) == counter.get_total_flops(), fmt.name


def test_the_cuda_python_backend_frees_every_buffer_it_allocated(monkeypatch):
    """Issue 23 item 8: device buffers were never freed. The backend's bookkeeping, on a stand-in `cudart` that
    records calls (the CUDA runtime itself is exercised by scripts/gpu-check.sh where a GPU exists)."""
    import sys
    import types

    from pipeline.portable import cuda_buffers

    calls, handles = [], iter(range(100, 200))

    def call(name):
        def record(*args):
            calls.append((name, args))
            return (0, next(handles)) if name in ("cudaMalloc", "cudaStreamCreate") else (0,)

        return record

    runtime = types.SimpleNamespace(
        **{n: call(n) for n in ("cudaStreamCreate", "cudaMalloc", "cudaFree", "cudaStreamDestroy")}
    )
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = runtime
    monkeypatch.setitem(sys.modules, "cuda", types.ModuleType("cuda"))
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", runtime)
    backend = cuda_buffers._CudaPython()
    first, second = backend.malloc(16), backend.malloc(32)
    backend.free(first)
    backend.close()
    freed = [args[0] for name, args in calls if name == "cudaFree"]
    assert freed == [first, second] and backend.live == [] and calls[-1][0] == "cudaStreamDestroy"
