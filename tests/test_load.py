"""load_model / identify_arch / parse_input_shape: every supported format round-trips, every bad input
fails with a one-line PipelineError naming the file or key."""

import argparse
import os

import pytest
import torch
import torch.nn as nn
import torchvision

from pipeline.errors import PipelineError
from pipeline.models import create_model, get_spec, list_models
from pipeline.models.checkpoint import save_checkpoint
from pipeline.models.load import (
    LoadedModel,
    identify_arch,
    load_model,
    parse_input_shape,
)
from pipeline.preprocess import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    IMAGENET_MEAN,
    Preprocess,
)

SMALL_FAMILIES = ("lenet", "cifar-resnet")


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    # These models are tiny or probed at 32 px: extra intra-op threads only fight other processes for cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def _model(arch: str, **kwargs) -> nn.Module:
    return create_model(arch, **kwargs).eval()


def _assert_same_outputs(original: nn.Module, loaded: LoadedModel, shape=None, batch: int = 3) -> None:
    x = torch.randn(batch, *(shape or loaded.input_shape))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), original(x))


def _error(match: str, **kwargs) -> str:
    """Call load_model(**kwargs); it must raise a one-line PipelineError containing `match`."""
    with pytest.raises(PipelineError) as caught:
        load_model(**kwargs)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message, message
    assert match in message, message
    return message


# --- parse_input_shape ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3,224,224", (3, 224, 224)),
        ("3x224x224", (3, 224, 224)),
        ("1x28x28", (1, 28, 28)),
        ("3X32X32", (3, 32, 32)),
        (" (3, 32, 32) ", (3, 32, 32)),
        ("[1,28,28]", (1, 28, 28)),
    ],
)
def test_parse_input_shape(text, expected):
    assert parse_input_shape(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "abc", "3x224", "3x224x224x1", "0x28x28", "-1,28,28", "3.0x28x28", "3x99999x99999", "3;28;28", "３x28x28"],
)
def test_parse_input_shape_rejects_junk(text):
    with pytest.raises(PipelineError) as caught:
        parse_input_shape(text)
    assert "\n" not in str(caught.value) and repr(text) in str(caught.value)


# --- identify_arch ----------------------------------------------------------------------------


@pytest.mark.parametrize("arch", list_models())
@pytest.mark.parametrize("in_channels, num_classes", [(None, None), (1, 5), (3, 7)])
def test_identify_every_registry_arch(arch, in_channels, num_classes):
    # Meta tensors carry shapes without weights, which is all identification reads.
    with torch.device("meta"):
        state_dict = create_model(arch, in_channels=in_channels, num_classes=num_classes).state_dict()
    spec = get_spec(arch)
    assert identify_arch(state_dict) == (
        arch,
        in_channels or spec.default_input[0],
        num_classes or spec.default_classes,
    )


@pytest.mark.parametrize(
    "factory, arch",
    [
        (torchvision.models.resnet18, "resnet18"),
        (torchvision.models.resnet34, "resnet34"),
        (torchvision.models.resnet50, "resnet50"),
        (torchvision.models.mobilenet_v2, "mobilenet_v2"),
    ],
)
def test_identify_plain_torchvision(factory, arch):
    with torch.device("meta"):
        state_dict = factory().state_dict()
    assert identify_arch(state_dict) == (arch, 3, 1000)


def test_identify_unknown_state_dict():
    with pytest.raises(PipelineError) as caught:
        identify_arch({"stem.weight": torch.zeros(8, 3, 3, 3), "head.weight": torch.zeros(4, 8)})
    assert "--arch" in str(caught.value) and "resnet18" in str(caught.value) and "\n" not in str(caught.value)


# --- state_dict round trips ---------------------------------------------------------------------


# resnet34 is covered, at full size, by test_headline_torchvision_resnet34.
@pytest.mark.parametrize("arch", [name for name in list_models() if name != "resnet34"])
def test_state_dict_round_trip_every_arch(arch, tmp_path):
    model = _model(arch, num_classes=7)
    path = tmp_path / f"{arch}.pt"
    torch.save(model.state_dict(), path)
    small = get_spec(arch).family in SMALL_FAMILIES
    # Small families use their default input; ImageNet ones are probed at 32 px to keep the test fast.
    loaded = load_model(path, input_shape=None if small else (3, 32, 32))
    assert (loaded.arch, loaded.num_classes, loaded.source_format) == (arch, 7, "state_dict")
    assert loaded.input_shape == ((1, 28, 28) if small else (3, 32, 32))
    assert not loaded.model.training and loaded.metadata == {} and loaded.path == path
    _assert_same_outputs(model, loaded)


def test_headline_torchvision_resnet34(tmp_path):
    """`pipeline build --teacher r34.pt` with a bare torchvision state_dict and no other flags."""
    model = torchvision.models.resnet34().eval()
    path = tmp_path / "r34.pt"
    torch.save(model.state_dict(), path)
    loaded = load_model(path)
    assert (loaded.arch, loaded.num_classes, loaded.input_shape) == ("resnet34", 1000, (3, 224, 224))
    assert loaded.preprocess.mean == IMAGENET_MEAN and loaded.preprocess.channel_order == "RGB"
    _assert_same_outputs(model, loaded, shape=(3, 64, 64), batch=2)


def test_small_family_rgb_defaults_to_32px(tmp_path):
    model = _model("resnet8", in_channels=3)
    torch.save(model.state_dict(), tmp_path / "r8.pt")
    loaded = load_model(tmp_path / "r8.pt")
    assert loaded.input_shape == (3, 32, 32) and loaded.preprocess.mean == IMAGENET_MEAN
    _assert_same_outputs(model, loaded)


def _sgd_state(model: nn.Module) -> dict:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 1, 28, 28)).sum().backward()
    optimizer.step()
    model.zero_grad()
    return optimizer.state_dict()


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd, model: {"state_dict": sd},
        lambda sd, model: {"model": sd},
        lambda sd, model: {"model_state_dict": sd, "epoch": 12},
        lambda sd, model: {f"module.{key}": value for key, value in sd.items()},
        lambda sd, model: {f"_orig_mod.{key}": value for key, value in sd.items()},
        # pytorch/examples ImageNet script: DataParallel prefix inside a wrapper next to optimizer state.
        lambda sd, model: {
            "epoch": 3,
            "arch": "lenet5",
            "best_acc1": torch.tensor(71.2),
            "state_dict": {f"module.{key}": value for key, value in sd.items()},
            "optimizer": _sgd_state(model),
        },
    ],
    ids=["state_dict", "model", "model_state_dict", "module-prefix", "compile-prefix", "imagenet-example"],
)
def test_state_dict_wrappers(wrap, tmp_path):
    model = _model("lenet5")
    state_dict = {key: value.clone() for key, value in model.state_dict().items()}
    torch.save(wrap(state_dict, create_model("lenet5")), tmp_path / "wrapped.pt")
    loaded = load_model(tmp_path / "wrapped.pt")
    assert (loaded.arch, loaded.num_classes, loaded.input_shape) == ("lenet5", 10, (1, 28, 28))
    _assert_same_outputs(model, loaded)


def test_state_dict_with_explicit_arch_half_precision_and_no_num_batches_tracked(tmp_path):
    model = _model("resnet8")
    state_dict = {
        key: value.half() if value.is_floating_point() else value
        for key, value in model.state_dict().items()
        if not key.endswith("num_batches_tracked")
    }
    torch.save(state_dict, tmp_path / "old.pt")
    loaded = load_model(tmp_path / "old.pt", arch="resnet8", num_classes=10)
    assert loaded.arch == "resnet8" and next(loaded.model.parameters()).dtype == torch.float32
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model.half().float()(x))


# --- our own checkpoint -------------------------------------------------------------------------


def test_pipeline_checkpoint_round_trip(tmp_path):
    model = _model("resnet8")
    preprocess = Preprocess(1, 28, 28, FASHION_MNIST_MEAN, FASHION_MNIST_STD, "gray")
    save_checkpoint(
        tmp_path / "t.pt",
        model,
        arch="resnet8",
        preprocess=preprocess,
        num_classes=10,
        metadata={"test_accuracy": 0.91},
    )
    loaded = load_model(tmp_path / "t.pt")
    assert (loaded.arch, loaded.source_format, loaded.preprocess) == ("resnet8", "pipeline", preprocess)
    assert loaded.metadata == {"test_accuracy": 0.91} and loaded.num_classes == 10
    _assert_same_outputs(model, loaded)
    _error("resnet20", path=tmp_path / "t.pt", arch="resnet20")


# --- TorchScript, torch.export, pickled modules ----------------------------------------------------


def test_torchscript_needs_input_shape(tmp_path):
    model = _model("resnet8", in_channels=3, num_classes=4)
    path = tmp_path / "traced.pt"
    torch.jit.save(torch.jit.trace(model, torch.randn(1, 3, 32, 32)), path)
    _error("--input-shape", path=path)
    loaded = load_model(path, input_shape=(3, 32, 32))
    assert (loaded.arch, loaded.num_classes, loaded.source_format) == (None, 4, "torchscript")
    assert loaded.name == f"{type(model).__name__}, unregistered"  # tables name it by its class, never None
    _assert_same_outputs(model, loaded)


def test_torchscript_scripted_registry_model_infers_shape(tmp_path):
    model = _model("lenet5-half")
    torch.jit.save(torch.jit.script(model), tmp_path / "scripted.pt")
    loaded = load_model(tmp_path / "scripted.pt")
    assert loaded.input_shape == (1, 28, 28) and loaded.arch is None
    _assert_same_outputs(model, loaded)


def test_torch_export_batch1(tmp_path):
    """The usual export from a batch-1 example: the graph guards on batch 1 but must still take batches."""
    model = _model("lenet5")
    torch.export.save(torch.export.export(model, (torch.randn(1, 1, 28, 28),)), tmp_path / "m.pt2")
    loaded = load_model(tmp_path / "m.pt2")
    assert (loaded.arch, loaded.num_classes, loaded.input_shape, loaded.source_format) == (
        None,
        10,
        (1, 28, 28),
        "torch.export",
    )
    assert loaded.name == "torch.export program, unregistered"  # the program keeps no class name
    loaded.model.train()
    loaded.model.eval()  # must not raise, although ExportedProgram.module() refuses eval()
    _assert_same_outputs(model, loaded)


def test_torch_export_dynamic_batch(tmp_path):
    model = _model("resnet8", in_channels=3, num_classes=6)
    program = torch.export.export(model, (torch.randn(2, 3, 32, 32),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, tmp_path / "dyn.pt2")
    loaded = load_model(tmp_path / "dyn.pt2", num_classes=6)
    assert loaded.input_shape == (3, 32, 32) and loaded.num_classes == 6
    _assert_same_outputs(model, loaded, batch=5)


def test_torch_export_fixed_batch_above_one(tmp_path):
    model = _model("lenet5-half")
    torch.export.save(torch.export.export(model, (torch.randn(4, 1, 28, 28),)), tmp_path / "b4.pt2")
    _error("dynamic batch", path=tmp_path / "b4.pt2")


def test_pickled_module_needs_trust(tmp_path):
    model = _model("lenet5")
    path = tmp_path / "whole.pt"
    torch.save(model, path)
    message = _error("--trust-checkpoint", path=path)
    assert str(path) in message and "LeNet5" in message
    loaded = load_model(path, trust_checkpoint=True)
    assert (loaded.arch, loaded.source_format, loaded.input_shape) == ("lenet5", "pickle", (1, 28, 28))
    assert loaded.name == "lenet5"
    _assert_same_outputs(model, loaded)


class TinyNet(nn.Module):
    """Not a registry architecture: a pickled instance has no known input size."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x):
        return self.body(x)


def test_pickled_unknown_module_needs_input_shape(tmp_path):
    model = TinyNet().eval()
    torch.save(model, tmp_path / "tiny.pt")
    _error("--input-shape", path=tmp_path / "tiny.pt", trust_checkpoint=True)
    loaded = load_model(tmp_path / "tiny.pt", trust_checkpoint=True, input_shape=(3, 16, 16))
    assert (loaded.arch, loaded.num_classes, loaded.name) == (None, 3, "TinyNet, unregistered")
    _assert_same_outputs(model, loaded)


def test_state_dict_wrapper_with_pickled_extras(tmp_path):
    model = _model("lenet5")
    torch.save({"state_dict": model.state_dict(), "args": argparse.Namespace(lr=0.1)}, tmp_path / "ns.pt")
    _error("argparse.Namespace", path=tmp_path / "ns.pt")
    _assert_same_outputs(model, load_model(tmp_path / "ns.pt", trust_checkpoint=True))


# --- bad inputs -------------------------------------------------------------------------------


@pytest.fixture
def lenet_file(tmp_path):
    path = tmp_path / "lenet.pt"
    torch.save(_model("lenet5").state_dict(), path)
    return path


def test_missing_file(tmp_path):
    _error(f"teacher checkpoint {tmp_path / 'nope.pt'} does not exist", path=tmp_path / "nope.pt")


def test_directory(tmp_path):
    _error(str(tmp_path), path=tmp_path)


@pytest.mark.parametrize(
    "content", [b"", os.urandom(4096), b"hello, I am a text file\n"], ids=["empty", "random", "text"]
)
def test_unreadable_bytes(content, tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    _error(f"{path} is not a readable PyTorch checkpoint", path=path)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_truncated(legacy, lenet_file, tmp_path):
    path = tmp_path / "half.pt"
    torch.save(torch.load(lenet_file), path, _use_new_zipfile_serialization=not legacy)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _error(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?)", path=path)


def test_wrong_arch_names_keys(lenet_file):
    message = _error("does not match --arch resnet8", path=lenet_file, arch="resnet8")
    assert "missing conv1.weight" in message and "unexpected features.0.weight" in message
    assert "more)" in message and "looks like lenet5" in message and str(lenet_file) in message


def test_wrong_arch_shape_mismatch(tmp_path):
    torch.save(_model("resnet8", num_classes=10).state_dict(), tmp_path / "r8.pt")
    # resnet18n has the same key names in layer1..3 but wider tensors and a layer4.
    message = _error("wrong shape fc.weight 10x64 (expected 10x128)", path=tmp_path / "r8.pt", arch="resnet18n")
    assert "missing layer1.1.conv1.weight" in message and "looks like resnet8" in message


def test_unknown_arch(lenet_file):
    _error("resnet999", path=lenet_file, arch="resnet999")


def test_state_dict_of_unknown_arch(tmp_path):
    torch.save(TinyNet().state_dict(), tmp_path / "tiny_sd.pt")
    message = _error("pass --arch", path=tmp_path / "tiny_sd.pt")
    assert str(tmp_path / "tiny_sd.pt") in message and "lenet5" in message


def test_damaged_pipeline_checkpoint(tmp_path):
    save_checkpoint(
        tmp_path / "t.pt", _model("lenet5"), arch="lenet5", preprocess=Preprocess(1, 28, 28), num_classes=10
    )
    checkpoint = torch.load(tmp_path / "t.pt")
    del checkpoint["preprocess"]
    torch.save(checkpoint, tmp_path / "t.pt")
    _error("damaged edge-pipeline checkpoint", path=tmp_path / "t.pt")


def test_no_weights(tmp_path):
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pt")
    _error("holds no model weights", path=tmp_path / "meta.pt")


@pytest.mark.parametrize(
    "arch, shape, match",
    [
        ("lenet5", (1, 8, 8), "rejects input shape 1x8x8"),  # too small for its 5x5 convolutions
        ("resnet18", (1, 32, 32), "rejects input shape 1x32x32"),  # gray input into an RGB model
    ],
)
def test_wrong_input_shape(arch, shape, match, tmp_path):
    torch.save(_model(arch, num_classes=5).state_dict(), tmp_path / "m.pt")
    _error(match, path=tmp_path / "m.pt", input_shape=shape)


def test_wrong_input_shape_torchscript_reports_the_cause(tmp_path):
    torch.jit.save(torch.jit.script(_model("lenet5")), tmp_path / "ts.pt")
    # The cause, not TorchScript's "The following operation failed in the TorchScript interpreter."
    _error("rejects input shape 3x28x28: Given groups=1", path=tmp_path / "ts.pt", input_shape=(3, 28, 28))


def test_num_classes_mismatch(lenet_file):
    _error("outputs 10 classes but --num-classes 5", path=lenet_file, num_classes=5)


class FeatureNet(nn.Module):
    def forward(self, x):
        return x * 2  # an image in, an image out: not a classifier


def test_output_not_logits(tmp_path):
    torch.jit.save(torch.jit.script(FeatureNet()), tmp_path / "features.pt")
    _error("expected [2, num_classes] logits", path=tmp_path / "features.pt", input_shape=(3, 8, 8))


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_weights_are_refused(value, tmp_path):
    state = _model("lenet5", num_classes=10).state_dict()
    state["features.0.weight"][0, 0, 0, 0] = value
    torch.save(state, tmp_path / "diverged.pt")
    message = _error("1 NaN/Inf value(s) in features.0.weight", path=tmp_path / "diverged.pt")
    assert "training diverged" in message
