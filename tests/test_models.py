import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.models import create_model, default_student, get_spec, list_models
from pipeline.models.checkpoint import save_checkpoint
from pipeline.models.load import load_model
from pipeline.preprocess import default_preprocess


def _small_input(name: str) -> tuple[int, int, int]:
    channels, height, _ = get_spec(name).default_input
    return (channels, 64, 64) if height > 64 else (channels, height, height)


@pytest.mark.parametrize("name", list_models())
def test_registry_builds_and_runs(name):
    shape = _small_input(name)
    model = create_model(name, in_channels=shape[0], num_classes=7, image_size=shape[1]).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", list_models())
def test_registry_checkpoint_round_trip(name, tmp_path):
    shape = _small_input(name)
    model = create_model(name, in_channels=shape[0], num_classes=5, image_size=shape[1]).eval()
    path = tmp_path / f"{name}.pt"
    save_checkpoint(path, model, arch=name, preprocess=default_preprocess(*shape), num_classes=5)
    loaded = load_model(path)
    assert loaded.arch == name and loaded.num_classes == 5 and loaded.input_shape == shape
    x = torch.randn(3, *shape)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", list_models())
def test_default_student_is_registered_and_not_larger(name):
    student = default_student(name, get_spec(name).default_input)
    assert student in list_models()
    count = lambda arch: sum(p.numel() for p in create_model(arch, num_classes=10).parameters())  # noqa: E731
    assert count(student) <= count(name)


def test_input_channels_and_classes_are_parameters():
    model = create_model("resnet18", in_channels=1, num_classes=3, image_size=64)
    assert model.conv1.in_channels == 1 and model.fc.out_features == 3


def test_unknown_architecture_is_a_one_line_error():
    with pytest.raises(PipelineError, match="unknown architecture 'resnet99'"):
        create_model("resnet99")
