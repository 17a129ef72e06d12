"""The training batch fits the build's memory limit (issue 22 item 8): what a step adds per image is counted
from the tensors autograd keeps, and the budget's batch is halved until the limit holds, with a note."""

import torch
import torch.nn as nn

from pipeline.assets import resolve_teacher
from pipeline.models import create_model
from pipeline.models.load import load_model
from pipeline.models.loaded import LoadedModel
from pipeline.models.memory import saved_bytes_per_image
from pipeline.preprocess import default_preprocess
from pipeline.recipes.context import prepare
from pipeline.recipes.memory import MIN_BATCH, memory_safe_batch
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
