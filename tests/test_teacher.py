"""The embedded teachers and the command that makes them."""

import torch

from pipeline.assets import embedded_teacher_path, embedded_teachers
from pipeline.models.load import load_model
from pipeline.teacher.train import train_teacher
from tests.conftest import needs_fmnist


def test_embedded_teachers_are_small_and_record_their_accuracy():
    assert {"lenet5-fmnist", "resnet20-fmnist"} <= set(embedded_teachers())
    for name in embedded_teachers():
        path = embedded_teacher_path(name)
        assert path.stat().st_size < 4_000_000
        loaded = load_model(path)
        training = loaded.metadata["training"]
        assert training["dataset"] == "fashion-mnist" and 0.85 < training["test_accuracy"] < 1.0
        assert training["command"].startswith("pipeline teacher train")
        assert loaded.preprocess.input_shape == (1, 28, 28)


@needs_fmnist
def test_teacher_training_is_reproducible_from_a_seed(tmp_path):
    """What `pipeline teacher train --arch lenet5-half --epochs 1 --train-images 1024 --seed 3` calls, twice."""
    outputs = []
    for attempt in ("a", "b"):
        path = tmp_path / f"{attempt}.pt"
        record = train_teacher("lenet5-half", path, epochs=1, seed=3, train_images=1024)
        outputs.append((torch.load(path, weights_only=True), record))
    (first, record), (second, _) = outputs
    for key, tensor in first["state_dict"].items():
        assert torch.equal(tensor, second["state_dict"][key]), key
    assert record["train_images"] == 1024 and 0.0 < record["test_accuracy"] <= 1.0
    assert record["command"] == "pipeline teacher train --arch lenet5-half --epochs 1 --seed 3 --train-images 1024"
    assert load_model(tmp_path / "a.pt").metadata["training"] == record  # the checkpoint says how it was made
