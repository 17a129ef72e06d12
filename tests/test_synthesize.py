"""Synthesizers, the transfer set and the data-free loop, on the embedded LeNet-5 teacher (fast on a CPU)."""

import pytest
import torch

from pipeline.assets import resolve_teacher
from pipeline.data.transfer_set import TransferSet, default_capacity
from pipeline.errors import PipelineError
from pipeline.models import create_model
from pipeline.models.teacher_view import TeacherView
from pipeline.synthesize.base import create_synthesizer, list_synthesizers, resolve_options
from pipeline.synthesize.data_free_loop import DataFreeLoop, StudentTraining
from pipeline.synthesize.soft_target import class_similarity, nearest_psd
from pipeline.synthesize.state import load_synthesizer, save_synthesizer
from pipeline.teacher_spec import TeacherSpec
from pipeline.training import ResumableLoop, freeze
from tests.conftest import needs_fmnist


@pytest.fixture(scope="module")
def lenet_view() -> TeacherView:
    loaded = TeacherSpec().load(resolve_teacher("embedded:lenet5-fmnist"))
    return TeacherView(freeze(loaded.model), loaded.preprocess, loaded.num_classes, torch.device("cpu"))


SMALL = {
    "dafl": {"batch_size": 16},
    "bn-inversion": {"batch_size": 16, "inner_steps": 2},
    "soft-target": {"batch_size": 16, "inner_steps": 3},
}


def test_registry_lists_every_method_the_issue_names():
    assert {"dafl", "soft-target", "bn-inversion", "images"} <= set(list_synthesizers())


def test_options_resolve_preset_and_reject_unknown_names():
    paper = resolve_options("dafl", "paper")
    assert paper["lr"] == 0.2 and paper["width"] == 128 and paper["batch_size"] == 512 and paper["gamma_bn"] == 0
    assert resolve_options("dafl", None, {"lr": "0.01"})["lr"] == 0.01  # cast to the default's type
    with pytest.raises(PipelineError, match="no option 'nope'"):
        resolve_options("dafl", None, {"nope": 1})
    with pytest.raises(PipelineError, match="no preset"):
        resolve_options("soft-target", "paper")
    with pytest.raises(PipelineError, match="unknown synthesizer"):
        resolve_options("gan")


@pytest.mark.parametrize("method", sorted(SMALL))
def test_each_synthesizer_emits_valid_images_and_resumes_identically(method, lenet_view, tmp_path):
    options = resolve_options(method, None, SMALL[method])
    synthesizer = create_synthesizer(method, lenet_view, options, seed=0)
    images = synthesizer.sample(20)
    assert images.shape == (20, 1, 28, 28) and torch.isfinite(images).all()
    low, high = lenet_view.pixel_bounds()
    if method != "dafl":  # DAFL's BN-normalised output is clamped only when stored
        assert images.min() >= low.min() - 1e-5 and images.max() <= high.max() + 1e-5
    save_synthesizer(tmp_path / "s.pt", synthesizer, seed=0)
    restored = load_synthesizer(tmp_path / "s.pt", lenet_view)
    torch.manual_seed(1)
    a = synthesizer.sample(16)
    torch.manual_seed(1)
    b = restored.sample(16)
    assert torch.allclose(a, b, atol=1e-6)  # same generator state and RNG -> same next batch
    synthesizer.close()
    restored.close()


def test_soft_target_covariance_comes_from_the_teachers_class_vectors(lenet_view):
    weight = lenet_view.model.classifier[-1].weight
    similarity = class_similarity(weight)
    assert similarity.shape == (10, 10)
    assert float(similarity.min()) == pytest.approx(0.0) and float(similarity.max()) == pytest.approx(1.0)
    assert torch.allclose(similarity, similarity.t())
    assert torch.linalg.eigvalsh(nearest_psd(similarity)).min() > 0


def test_bn_inversion_refuses_a_teacher_without_batchnorm(lenet_view):
    plain = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(10))
    plain(torch.zeros(1, 1, 28, 28))
    view = TeacherView(plain, lenet_view.preprocess, 10, torch.device("cpu"))
    with pytest.raises(PipelineError, match="needs a teacher with BatchNorm"):
        create_synthesizer("bn-inversion", view, resolve_options("bn-inversion"), 0)


def test_transfer_set_round_trip_and_reservoir(tmp_path):
    pool = TransferSet((1, 4, 4), 3, capacity=10)
    for value in range(4):
        pixels = torch.full((4, 1, 4, 4), value, dtype=torch.uint8)
        pool.add(pixels, torch.randn(4, 3), rng=torch.Generator().manual_seed(value))
    assert len(pool) == 10 and pool.added == 16
    assert set(pool.pixels.flatten().tolist()) >= {3}  # the newest batch replaced old images
    pool.save(tmp_path / "t.pt", method="test")
    again = TransferSet.load(tmp_path / "t.pt")
    assert torch.equal(again.pixels, pool.pixels) and torch.equal(again.logits, pool.logits)
    (tmp_path / "bad.pt").write_bytes(b"not a tensor file")
    with pytest.raises(PipelineError, match="not a readable transfer set"):
        TransferSet.load(tmp_path / "bad.pt")
    assert default_capacity((3, 224, 224)) < default_capacity((1, 28, 28)) == 100_000


def test_class_balanced_kd_batches_draw_a_rare_class_as_often_as_a_common_one():
    pool = TransferSet((1, 4, 4), 2, capacity=100)
    logits = torch.tensor([[5.0, 0.0]] * 90 + [[0.0, 5.0]] * 10)  # 90 % of the pool is class 0
    pool.add(torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1).expand(100, 1, 4, 4), logits)
    rare = {}
    for balance in (0.0, 0.5, 1.0):
        _, drawn = pool.batch(4000, torch.Generator().manual_seed(0), class_balance=balance)
        rare[balance] = float((drawn.argmax(1) == 1).float().mean())
    assert rare[0.0] == pytest.approx(0.1, abs=0.02) and rare[1.0] == pytest.approx(0.5, abs=0.03)
    assert rare[0.5] == pytest.approx(0.25, abs=0.03)  # weights count**-0.5: sqrt(10) against sqrt(90)
    pool.add(torch.zeros(50, 1, 4, 4, dtype=torch.uint8), torch.tensor([[0.0, 5.0]] * 50))  # replaces old slots
    assert torch.equal(pool.teacher_classes(), pool.logits.argmax(1))  # the kept classes follow the pool


def test_teacher_logits_in_the_pool_are_the_teachers_on_the_stored_pixels(lenet_view):
    synthesizer = create_synthesizer(
        "bn-inversion", lenet_view, resolve_options("bn-inversion", None, SMALL["bn-inversion"]), 0
    )
    pool = TransferSet(lenet_view.input_shape, 10, 100)
    engine = DataFreeLoop(lenet_view, synthesizer, pool, None, StudentTraining(), 0)
    for _ in range(4):
        engine.iteration(0.0)
    assert len(pool) == 32
    with torch.no_grad():
        expected = lenet_view.model(lenet_view.from_uint8(pool.pixels))
    assert torch.allclose(pool.logits.float(), expected, atol=2e-2, rtol=1e-2)  # float16 storage
    synthesizer.close()


def test_bn_inversion_jitter_shows_the_teacher_shifted_or_flipped_views(lenet_view):
    """jitter=2: every image the teacher judges is the generated one moved by <= 2 px (edge-padded), maybe mirrored,
    and the gradient still reaches the generated pixels."""
    import torch.nn.functional as F

    plain = create_synthesizer(
        "bn-inversion", lenet_view, resolve_options("bn-inversion", None, {"batch_size": 8, "jitter": 0}), 0
    )
    images = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert plain._jittered(images) is images  # jitter=0: the teacher sees the images as generated
    plain.close()
    synthesizer = create_synthesizer(
        "bn-inversion", lenet_view, resolve_options("bn-inversion", None, {"batch_size": 8, "jitter": 2}), 0
    )
    images.requires_grad_(True)
    seen = synthesizer._jittered(images)
    padded = F.pad(images.detach(), (2, 2, 2, 2), mode="replicate")
    views = [
        view
        for dy in range(5)
        for dx in range(5)
        for view in (padded[..., dy : dy + 28, dx : dx + 28], padded[..., dy : dy + 28, dx : dx + 28].flip(-1))
    ]
    for i in range(len(images)):
        assert any(torch.equal(seen[i].detach(), view[i]) for view in views), i
    assert not torch.equal(seen.detach(), images.detach())
    seen.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    synthesizer.close()


@needs_fmnist
def test_real_images_few_shot_per_class(lenet_view):
    options = resolve_options("images", None, {"path": "fmnist-train", "per_class": 3, "batch_size": 8})
    synthesizer = create_synthesizer("images", lenet_view, options, 0)
    first = synthesizer.step()
    assert first.shape == (30, 1, 28, 28)  # the originals first: 3 per class
    shifted = synthesizer.step()
    assert shifted.shape == (8, 1, 28, 28)
    with pytest.raises(PipelineError, match="needs a folder"):
        create_synthesizer("images", lenet_view, resolve_options("images"), 0)


@needs_fmnist
def test_a_short_data_free_run_teaches_the_student_far_above_chance(lenet_view, tmp_path):
    """20 s of bn-inversion + KD on 2 cores: the student must beat chance (10 %) by a wide margin on real test images."""
    from pipeline.data.datasets import fashion_mnist_split

    torch.manual_seed(0)
    student = create_model("lenet5-half", in_channels=1, num_classes=10, image_size=28)
    options = resolve_options("bn-inversion", None, {"batch_size": 64})
    synthesizer = create_synthesizer("bn-inversion", lenet_view, options, 0)
    pool = TransferSet(lenet_view.input_shape, 10, 20_000)
    engine = DataFreeLoop(lenet_view, synthesizer, pool, student, StudentTraining(batch_size=64), 0)
    engine.run(ResumableLoop(tmp_path, 20, engine.states()), "test")
    test = fashion_mnist_split("test", lenet_view.preprocess, 1000)
    with torch.no_grad():
        accuracy = (engine.final_student()(test.images).argmax(1) == test.labels).float().mean().item()
    assert accuracy > 0.3, accuracy
    assert engine.first_kd > engine.last["kd"]
    synthesizer.close()


def test_auto_picks_bn_inversion_only_for_teachers_with_batchnorm(lenet_view):
    from types import SimpleNamespace

    from pipeline.recipes.context import auto_synthesizer

    assert auto_synthesizer(SimpleNamespace(model=lenet_view.model)) == "bn-inversion"
    plain = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 26 * 26, 10))
    assert auto_synthesizer(SimpleNamespace(model=plain)) == "dafl"
    scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4)))
    assert auto_synthesizer(SimpleNamespace(model=scripted)) == "dafl"  # no hookable BN modules in TorchScript


def test_augmented_kd_batches_are_new_views_labelled_by_the_teacher(lenet_view):
    from pipeline.kd import augment_batch

    images = lenet_view.from_pixels(torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    a = augment_batch(images, torch.Generator().manual_seed(1))
    b = augment_batch(images, torch.Generator().manual_seed(1))
    assert a.shape == images.shape and torch.equal(a, b)  # seeded
    assert not torch.equal(a, images)
    low, high = lenet_view.pixel_bounds()
    assert a.min() >= low.min() - 1e-5 and a.max() <= high.max() + 1e-5  # still valid pixels
    student = create_model("lenet5-half", in_channels=1, num_classes=10, image_size=28)
    pool = TransferSet(lenet_view.input_shape, 10, 100)
    pool.add(lenet_view.to_uint8(images), lenet_view.model(images).detach())
    engine = DataFreeLoop(lenet_view, None, pool, student, StudentTraining(batch_size=16, augment=True), 0)
    engine.iteration(0.0)
    assert engine.student_steps == StudentTraining().kd_steps and engine.last["kd"] > 0
