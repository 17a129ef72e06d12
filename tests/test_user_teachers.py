"""Teachers as users save them, built end to end through the build recipe (in process, not the CLI: the
command-line runs are counted, tests/cli_runs.py): a torch.export program exported the usual way, from a
batch-1 example without dynamic shapes, and a TorchScript CNN no registry knows (issue 22 item 7)."""

import pytest
import torch
import torch.nn as nn

from pipeline.recipes.build import run_build
from pipeline.recipes.options import BuildOptions

SMOKE = {"budget": "smoke", "steps": 2, "eval": "none"}
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.s:FutureWarning")  # script and save: the format users have


def _rows(summary: dict) -> dict:
    return {row["model"]: row for row in summary["rows"]}


def test_a_batch_one_torch_export_program_of_a_torchvision_model_builds(tmp_path):
    import torchvision

    model = torchvision.models.resnet18(num_classes=10).eval()
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, 32, 32),)), tmp_path / "r18.pt2")
    summary = run_build(BuildOptions(teacher=str(tmp_path / "r18.pt2"), out=tmp_path / "run", **SMOKE))
    rows = _rows(summary)
    assert rows["teacher"]["arch"] == "torch.export program, unregistered"
    assert rows["student"]["parameters"] < rows["teacher"]["parameters"]
    assert rows["teacher"]["latency_median_ms"] > 0 and rows["student"]["latency_median_ms"] > 0
    assert any("fixed batch of 1" in note for note in summary["notes"])  # said once, in the summary


class ResidualCNN(nn.Module):
    """About 19k parameters: the registry's usual student for an unknown 28-px teacher (ResNet-14) is 9x larger."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 32, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1))
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(x + self.body(x))
        return self.head(x.mean((2, 3)))


def test_an_unregistered_torchscript_cnn_builds_with_a_smaller_student(tmp_path):
    torch.jit.save(torch.jit.script(ResidualCNN().eval()), tmp_path / "cnn.pt")
    options = BuildOptions(teacher=str(tmp_path / "cnn.pt"), input_shape=(1, 28, 28), out=tmp_path / "run", **SMOKE)
    summary = run_build(options)
    rows = _rows(summary)
    assert rows["teacher"]["arch"] == "ResidualCNN, unregistered"
    assert rows["student"]["arch"] == "lenet5-half"
    assert rows["student"]["parameters"] < rows["teacher"]["parameters"]
    assert any("the usual one, resnet14, is not smaller than the teacher ResidualCNN" in n for n in summary["notes"])


class FlattensToBatchOne(nn.Module):
    """`x.view(1, -1)`: traced, the batch of 1 is baked in, as in many deployment scripts."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 32, 5, stride=2)
        self.head = nn.Linear(32 * 12 * 12, 10)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).view(1, -1))


def test_a_torchscript_teacher_traced_at_batch_one_exports_at_its_batch_and_builds(tmp_path):
    from pipeline.export import export_onnx
    from pipeline.models.load import load_model
    from pipeline.runtimes import OnnxRuntimeRunner

    model = FlattensToBatchOne().eval()
    torch.jit.save(torch.jit.trace(model, torch.randn(1, 1, 28, 28)), tmp_path / "b1.pt")
    loaded = load_model(tmp_path / "b1.pt", input_shape=(1, 28, 28))
    images = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        expected = torch.cat([model(image[None]) for image in images])
        torch.testing.assert_close(loaded.model(images), expected)
    result = export_onnx(loaded.model, loaded.preprocess, tmp_path / "b1.onnx")
    assert (result.exporter, result.fixed_batch) == ("torchscript", 1)
    with OnnxRuntimeRunner(result.path) as runner:
        torch.testing.assert_close(torch.from_numpy(runner.infer(images.numpy())), expected, atol=1e-5, rtol=1e-5)
    options = BuildOptions(teacher=str(tmp_path / "b1.pt"), input_shape=(1, 28, 28), out=tmp_path / "run", **SMOKE)
    summary = run_build(options)
    assert _rows(summary)["teacher"]["arch"] == "FlattensToBatchOne, unregistered"
    assert any("fixed batch of 1" in note for note in summary["notes"])
