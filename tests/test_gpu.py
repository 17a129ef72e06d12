"""What only a CUDA GPU can show (marked `gpu`; scripts/gpu-check.sh runs them on a GPU machine without TensorRT,
network or Fashion-MNIST). Each skips here, with the reason, where torch sees no GPU."""

import numpy as np
import pytest
import torch

from pipeline.assets import resolve_teacher
from pipeline.models.load import load_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here (torch.cuda.is_available() is False)"),
]


def test_the_torch_runner_on_the_gpu_matches_the_cpu():
    import copy

    from pipeline.runtimes import TorchRunner

    loaded = load_model(resolve_teacher("embedded:resnet20-fmnist"))
    images = np.random.default_rng(0).standard_normal((8, 1, 28, 28)).astype(np.float32)
    with TorchRunner(loaded.model) as cpu:  # the runner runs where the model's parameters are
        expected = cpu.infer(images)
    with TorchRunner(copy.deepcopy(loaded.model).cuda()) as gpu:
        got = gpu.infer(images)
        assert gpu.describe()["device"].startswith("cuda")
    assert np.abs(got - expected).max() <= 1e-3 * max(1.0, np.abs(expected).max())
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_the_cost_probe_times_steps_on_the_gpu():
    from pipeline.recipes.costs import measure_unit_costs
    from pipeline.synthesize.base import resolve_options

    teacher = load_model(resolve_teacher("embedded:lenet5-fmnist"))
    options = {**resolve_options("bn-inversion"), "batch_size": 32}
    costs = measure_unit_costs(teacher, "lenet5-half", "bn-inversion", options, 32, torch.device("cuda"))
    assert costs.synthesis_step_s > 0 and costs.kd_step_s > 0


def test_cuda_python_buffers_round_trip_and_are_freed():
    pytest.importorskip("cuda", reason="cuda-python is not installed")
    from pipeline.portable.cuda_buffers import _CudaPython

    backend = _CudaPython()
    host = np.arange(1024, dtype=np.float32)
    back = np.zeros_like(host)
    buffer = backend.malloc(host.nbytes)
    backend.to_device(buffer, host)
    backend.to_host(back, buffer)
    backend.synchronize()
    assert np.array_equal(host, back) and backend.gpu()["compute_capability"]
    backend.close()
    assert backend.live == []
