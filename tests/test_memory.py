"""The build fits its memory limit (issue 22 item 8): what a training step adds per image is counted from the
tensors autograd keeps, and the budget's batch is halved until the limit holds, with a note; inference passes
go in chunks sized by the image, and the drop probe keeps transfer images as uint8."""

import pytest
import torch
import torch.nn as nn

from pipeline import process_memory
from pipeline.assets import resolve_teacher
from pipeline.data.transfer_set import NormalisedImages
from pipeline.drop.blocks import require_blocks
from pipeline.drop.recoverability import RecoverabilityProbe, RecoverabilitySettings
from pipeline.models import create_model
from pipeline.models.load import load_model
from pipeline.models.loaded import LoadedModel
from pipeline.models.memory import saved_bytes_per_image
from pipeline.preprocess import default_preprocess
from pipeline.process_memory import inference_batch
from pipeline.recipes.context import prepare
from pipeline.recipes.memory import DROP_BATCH, MIN_BATCH, drop_batch_for, memory_safe_batch
from pipeline.recipes.options import BuildOptions


def test_the_count_grows_with_the_image_and_leaves_the_model_as_it_was():
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    small = saved_bytes_per_image(model, (1, 16, 16), input_grad=True, train=False)
    large = saved_bytes_per_image(model, (1, 64, 64), input_grad=True, train=False)
    assert 0 < small < large and 12 < large / small < 20  # 16x the pixels (the last conv is 'valid')
    assert not model.training and saved_bytes_per_image(model, (1, 16, 16), input_grad=False, train=True) > 0
    assert not model.training


def test_a_224_px_resnet34_build_gets_a_smaller_batch_and_a_28_px_one_keeps_its_own():
    torch.manual_seed(0)
    r34 = LoadedModel(create_model("resnet34").eval(), "resnet34", 1000, default_preprocess(3, 224, 224), "x", None)
    batch, note = memory_safe_batch(r34, "resnet18", 128, 6.0)
    assert MIN_BATCH <= batch < 128 and note.startswith(f"training batch 128 -> {batch}: a step adds up to")
    assert "at 224x224, and the build stays under 6 GiB" in note
    resnet20 = load_model(resolve_teacher("embedded:resnet20-fmnist"))
    assert memory_safe_batch(resnet20, "resnet14", 128, 6.0) == (128, None)
    batch, note = memory_safe_batch(resnet20, "resnet14", 128, 0.5)  # less than a process holds
    assert batch == MIN_BATCH and "not even 8 fits" in note


def test_prepare_lowers_the_budget_batch_and_says_so(tmp_path):
    options = BuildOptions(teacher="embedded:lenet5-fmnist", out=tmp_path / "run", eval="none")
    assert prepare(options).memory_note is None and prepare(options).budget.batch_size == 128
    tight = BuildOptions(teacher="embedded:lenet5-fmnist", out=tmp_path / "run", eval="none", max_memory_gib=1.0)
    ctx = prepare(tight)  # below what a build process holds: the smallest batch, and the note says it may not fit
    assert ctx.budget.batch_size == MIN_BATCH and ctx.memory_note.startswith(f"training batch 128 -> {MIN_BATCH}")


def test_the_limit_is_a_flag_of_the_build_commands(tmp_path):
    """`pipeline build --max-memory 1 --plan`: the plan names the lowered batch (no stage runs)."""
    import json

    from tests.conftest import invoke_cli

    planned = invoke_cli("build", "--max-memory", "1", "--out", str(tmp_path / "run"), "--plan", "--json")
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["memory_note"].startswith(f"training batch 128 -> {MIN_BATCH}")


def test_an_inference_chunk_takes_fewer_images_as_they_grow():
    assert inference_batch((1, 28, 28)) == 256 and inference_batch((1, 28, 28), largest=500) == 500
    # 224-px passes go at the batch the build's cost probe times a forward at, so the plan's pass estimates hold
    from pipeline.recipes.costs import PROBE_BATCH

    assert inference_batch((3, 224, 224)) == PROBE_BATCH == 8
    assert inference_batch((3, 8192, 8192)) == 1


def test_the_drop_probe_keeps_its_images_as_uint8_and_measures_what_float_images_measure(monkeypatch):
    """A 224-px probe held 1,280 images as floats (0.8 GB) and passed 256 at a time through the teacher: now
    they stay uint8 until looked up, and the feature passes go in chunks, with the same features and R."""
    teacher = load_model(resolve_teacher("embedded:resnet20-fmnist")).model.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    pixels = torch.randint(0, 256, (60, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))

    def to_input(values: torch.Tensor) -> torch.Tensor:
        return (values.float() / 255 - 0.5) / 0.5

    settings = RecoverabilitySettings(steps=3, batch_size=8, train_images=40, eval_images=12)
    dense = RecoverabilityProbe(teacher, to_input(pixels), (1, 28, 28), settings, seed=1)
    monkeypatch.setattr(process_memory, "CHUNK_VALUES", 5 * 28 * 28)  # 5 images a pass: the chunks are used
    lazy = RecoverabilityProbe(
        teacher, NormalisedImages(pixels, to_input, torch.device("cpu")), (1, 28, 28), settings, seed=1
    )
    assert lazy.chunk == 5 and dense.chunk == 256
    assert isinstance(lazy.train_images, NormalisedImages) and lazy.train_images.pixels.dtype == torch.uint8
    assert len(lazy.train_images) == len(dense.train_images) == 40
    assert torch.allclose(lazy.train_features, dense.train_features, rtol=1e-5, atol=1e-6)
    block = require_blocks(teacher, "resnet20")[3].name
    assert lazy([block]) == pytest.approx(dense([block]), rel=1e-4)


def test_drop_probes_and_fine_tune_get_a_batch_that_fits_and_the_plan_says_so(tmp_path):
    """A ResNet-50's recovery at PRACTISE's batch 64 took its 224-px build to about 9 GB; the drop batch is now
    lowered like the training batch. A ResNet-18 at 64 px under a 1.7 GiB limit shows it in a second."""
    import torchvision

    from pipeline.recipes.build import plan_build

    teacher = tmp_path / "r18.pt"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), teacher)
    common = dict(teacher=str(teacher), recipe="drop", latency_reduction=0.2, budget="smoke", eval="none")
    common.update(input_shape=(3, 64, 64), out=tmp_path / "run")
    assert drop_batch_for(prepare(BuildOptions(**common))) == (DROP_BATCH, None)  # 6 GiB: PRACTISE's batch
    tight = plan_build(BuildOptions(**common, max_memory_gib=1.7))
    drop = next(stage for stage in tight["stages"] if stage["stage"] == "drop")["config"]
    batch = drop["recovery"]["batch_size"]
    assert MIN_BATCH <= batch < DROP_BATCH and drop["recoverability"]["batch_size"] == batch
    assert f"drop fine-tune batch {DROP_BATCH} -> {batch}: a step adds up to" in tight["memory_note"]
    assert "and the build stays under 1.7 GiB" in tight["memory_note"]
