"""The user's preprocessing (issue 22 item 6): `--mean`, `--std`, `--channel-order`, `--pixel-scale` and
`--preprocess FILE` reach the teacher's load options, and from there evaluation, the distilled student, the
exported metadata and the cache key; a bare file that records none gets one warning line naming the guess."""

import json

import onnx
import pytest
import torch

from pipeline import progress
from pipeline.assets import resolve_teacher
from pipeline.data.datasets import load_eval_dataset
from pipeline.distill.stage import DistillConfig, DistillStage
from pipeline.errors import PipelineError
from pipeline.evaluate import accuracy_torch
from pipeline.export.stage import ExportConfig, ExportStage
from pipeline.preprocess import Preprocess, PreprocessChoice, preprocess_choice
from pipeline.recipes.context import prepare
from pipeline.recipes.options import BuildOptions
from pipeline.stage import RunFolder
from pipeline.synthesize.base import resolve_options
from pipeline.synthesize.data_free_loop import StudentTraining
from pipeline.synthesize.stage import SynthesizeConfig, SynthesizeStage
from pipeline.teacher_spec import TeacherSpec
from tests.conftest import invoke_cli, needs_fmnist

LENET = resolve_teacher("embedded:lenet5-fmnist")  # trained on pixels / 255 with mean 0.286, std 0.353


@pytest.fixture
def bare_lenet(tmp_path):
    """The embedded LeNet-5 as users save theirs: `torch.save(model.state_dict())`, no preprocessing recorded."""
    path = tmp_path / "bare.pt"
    torch.save(torch.load(LENET, weights_only=True)["state_dict"], path)
    return path


def test_flags_and_a_file_make_one_choice_and_the_flags_win(tmp_path):
    assert preprocess_choice() is None  # nothing given: the file's values or the guess
    given = preprocess_choice(mean="0.485, 0.456,0.406", std="0.5", channel_order="bgr", pixel_scale=1.0)
    assert given == PreprocessChoice((0.485, 0.456, 0.406), (0.5,), "BGR", 1.0)
    card = tmp_path / "card.json"  # a model card's whole preprocess block, shape included, is accepted
    card.write_text(json.dumps({"mean": [0.5], "std": 0.25, "channels": 1, "pixel_scale": 255}))
    assert preprocess_choice(std="0.5", file=str(card)) == PreprocessChoice((0.5,), (0.5,), None, 255.0)
    toml = tmp_path / "pre.toml"
    toml.write_text('mean = [0.5, 0.5, 0.5]\nchannel-order = "RGB"\n')
    assert preprocess_choice(file=str(toml)) == PreprocessChoice((0.5, 0.5, 0.5), None, "RGB", None)


@pytest.mark.parametrize(
    "kwargs, said",
    [
        ({"mean": "half"}, "--mean expects numbers"),
        ({"channel_order": "YUV"}, "--channel-order expects RGB, BGR or gray"),
        ({"file": "missing.json"}, "--preprocess missing.json: cannot read it"),
        ({"file": "typo.json"}, "unknown key(s) stdev"),
        ({"file": "broken.json"}, "is not valid JSON"),
    ],
)
def test_bad_preprocessing_options_fail_in_one_line(kwargs, said, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "typo.json").write_text('{"stdev": 0.5}')
    (tmp_path / "broken.json").write_text('{"mean": ')
    with pytest.raises(PipelineError) as caught:
        preprocess_choice(**kwargs)
    assert said in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "choice, said",
    [
        (PreprocessChoice(mean=(0.1, 0.2)), "--mean has 2 values but bare.pt takes 1 channel(s): give 1"),
        (PreprocessChoice(channel_order="RGB"), "--channel-order RGB does not fit bare.pt (1 channel(s)): use gray"),
        (PreprocessChoice(std=(0.0,)), "--std must be positive"),
        (PreprocessChoice(pixel_scale=-1.0), "--pixel-scale must be positive"),
    ],
)
def test_a_choice_that_does_not_fit_the_model_is_refused_when_it_loads(choice, said, bare_lenet):
    with pytest.raises(PipelineError, match="^" + said.replace("(", r"\(").replace(")", r"\)")):
        TeacherSpec(preprocess=choice).load(bare_lenet)


def test_the_given_values_replace_the_recorded_or_guessed_ones_and_enter_the_cache_key(bare_lenet):
    guessed = TeacherSpec().load(bare_lenet)
    assert guessed.preprocess_source == "guessed"
    assert TeacherSpec().load(LENET).preprocess_source == "recorded"
    spec = TeacherSpec(preprocess=PreprocessChoice(mean=(0.5,), std=(0.5,)))
    for path in (bare_lenet, LENET):  # over a guess, and over what our own checkpoint records
        given = spec.load(path)
        assert given.preprocess_source == "given"
        assert (given.preprocess.mean, given.preprocess.std) == ((0.5,), (0.5,))
        assert given.preprocess.pixel_scale == guessed.preprocess.pixel_scale  # what was not given stays
    assert PreprocessChoice(mean=(0.5,)).apply(Preprocess(3, 8, 8), "x").mean == (0.5, 0.5, 0.5)  # every channel's
    # a run folder made before these options keeps its cache keys; a choice changes them
    plain = ExportStage({"teacher": LENET}, ExportConfig(specs={"teacher": TeacherSpec()})).config_dict()
    assert plain["specs"]["teacher"] == {
        "arch": None,
        "input_shape": None,
        "num_classes": None,
        "trust_checkpoint": False,
    }
    chosen = ExportStage({"teacher": LENET}, ExportConfig(specs={"teacher": spec})).config_dict()
    assert chosen["specs"]["teacher"]["preprocess"]["mean"] == (0.5,)


def test_a_bare_teacher_warns_once_naming_the_guess_and_a_given_choice_does_not(
    bare_lenet, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(progress, "_quiet", False)  # what a command without --quiet sets
    prepare(BuildOptions(teacher=str(bare_lenet), out=tmp_path / "a", eval="none"))
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "bare.pt records no preprocessing; guessing gray" in warnings[0]
    assert "mean 0.286, std 0.353" in warnings[0] and "--mean/--std/--channel-order/--pixel-scale" in warnings[0]
    choice = PreprocessChoice(mean=(0.5,), std=(0.5,))
    ctx = prepare(BuildOptions(teacher=str(bare_lenet), out=tmp_path / "b", eval="none", preprocess=choice))
    assert "warning:" not in capsys.readouterr().err
    assert ctx.spec.preprocess == choice and ctx.teacher.preprocess.mean == (0.5,)
    prepare(BuildOptions(teacher=str(LENET), out=tmp_path / "c", eval="none"))  # it records its own
    assert "warning:" not in capsys.readouterr().err


@needs_fmnist
def test_evaluation_reads_the_images_as_the_user_said(bare_lenet):
    """The teacher was trained on pixels / 255: told so it is accurate; told 0-255 inputs it is not."""
    accuracies = {}
    for scale in (255.0, 1.0):
        loaded = TeacherSpec(preprocess=PreprocessChoice(pixel_scale=scale)).load(bare_lenet)
        data = load_eval_dataset("fmnist", loaded.preprocess, limit=500)
        accuracies[scale] = accuracy_torch(loaded.model, data.images, data.labels)
    assert accuracies[255.0] > 0.85 and accuracies[1.0] < accuracies[255.0] - 0.3, accuracies


def test_the_student_and_the_exported_metadata_carry_the_given_preprocessing(bare_lenet, tmp_path):
    spec = TeacherSpec(preprocess=PreprocessChoice(mean=(0.5,), std=(0.5,)))
    run = RunFolder(tmp_path / "run")
    options = {**resolve_options("bn-inversion"), "batch_size": 8}
    run.run(SynthesizeStage(bare_lenet, SynthesizeConfig(seconds=60, steps=2, options=options, teacher=spec)))
    distill = DistillConfig(
        student="lenet5-half", seconds=60, steps=2, training=StudentTraining(batch_size=8), teacher=spec
    )
    synthesized = (run.artifact("synthesize", "transfer_set"), run.artifact("synthesize", "synthesizer"))
    run.run(DistillStage(bare_lenet, *synthesized, distill))
    student = run.artifact("distill", "student")
    assert TeacherSpec().load(student).preprocess.mean == (0.5,)  # recorded in the student it hands on
    models = {"teacher": bare_lenet, "student": student}
    metrics = run.run(ExportStage(models, ExportConfig(specs={"teacher": spec})))["metrics"]
    for name in models:
        assert list(metrics[name]["preprocess"]["mean"]) == [0.5] and list(metrics[name]["preprocess"]["std"]) == [0.5]
        props = {p.key: p.value for p in onnx.load(run.artifact("export", name)).metadata_props}
        assert json.loads(props["edge_pipeline.preprocess"])["mean"] == [0.5]


@pytest.mark.parametrize("command", ["build", "quantize"])
def test_the_flags_reach_the_plan_of_every_build_command(command, bare_lenet, tmp_path):
    """`pipeline build --plan` (no stage runs) with the four flags; a wrong one ends in one line and exit 2 (bad input)."""
    flags = ["--mean", "0.5", "--std", "0.5", "--pixel-scale", "255", "--channel-order", "gray"]
    common = ["--teacher", str(bare_lenet), "--out", str(tmp_path / "run"), "--eval", "none", "--plan"]
    planned = invoke_cli(command, *common, *flags, "--json")
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["preprocess"] == {
        "channels": 1, "height": 28, "width": 28, "mean": [0.5], "std": [0.5], "channel_order": "gray",
        "pixel_scale": 255.0, "layout": "NCHW", "source": "given",
    }  # fmt: skip
    refused = invoke_cli(command, *common, "--channel-order", "RGB")
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith("error: --channel-order RGB")
