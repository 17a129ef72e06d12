"""Each stage constructed directly, as a unit: a tiny embedded teacher, a temporary run folder, step-bounded
training, and assertions on what the stage hands on. No CLI and no recipe: the stage classes and their configs
are the interface under test (the CLI end-to-end runs live in test_build, test_drop, test_quantize, ...)."""

import json
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from pipeline.assets import resolve_teacher
from pipeline.bench.stage import BenchConfig, BenchStage
from pipeline.data.transfer_set import TransferSet
from pipeline.distill.stage import DistillConfig, DistillStage
from pipeline.drop.recoverability import RecoverabilitySettings
from pipeline.drop.stage import FINE_TUNE_FLOOR, DropConfig, DropStage, fine_tune_seconds
from pipeline.engine.stage import EngineConfig, EngineStage
from pipeline.export.stage import ExportConfig, ExportStage
from pipeline.fileio import sha256_file
from pipeline.kd import FeatureKDSettings
from pipeline.measure import LATENCY_RECORD_KEYS, LatencySettings, onnx_flops, spread_over_rounds
from pipeline.models import create_model
from pipeline.models.checkpoint import save_checkpoint
from pipeline.models.load import load_model
from pipeline.quantize.stage import QuantizeConfig, QuantizeStage
from pipeline.recipes import checkpoint_readers  # noqa: F401  (dropped checkpoints load back)
from pipeline.runtimes import holds_qdq
from pipeline.stage import RunFolder
from pipeline.synthesize.base import resolve_options
from pipeline.synthesize.data_free_loop import StudentTraining
from pipeline.synthesize.stage import SynthesizeConfig, SynthesizeStage
from tests.conftest import needs_fmnist

LENET = resolve_teacher("embedded:lenet5-fmnist")
RESNET = resolve_teacher("embedded:resnet20-fmnist")
# a few short rounds: these tests check what is measured and recorded, not how fast anything is
QUICK_LATENCY = LatencySettings(warmup=2, runs=5, rounds=3, max_seconds=0.2)


def _synthesize(
    run: RunFolder, teacher, method: str = "bn-inversion", steps: int = 3, mix: dict | None = None, **options
) -> dict:
    resolved = {**resolve_options(method), "batch_size": 16, **options}
    config = SynthesizeConfig(seconds=60, method=method, steps=steps, options=resolved, mix=mix)
    return run.run(SynthesizeStage(teacher, config))


def _distill(run: RunFolder, teacher, student: str, mix: dict | None = None, eval: str | None = None) -> dict:
    """Continues whichever synthesizer the run's synthesize stage used (it is in its synthesizer.pt)."""
    training = StudentTraining(batch_size=16)
    config = DistillConfig(student=student, seconds=60, steps=4, training=training, mix=mix, eval=eval, eval_limit=200)
    stage = DistillStage(
        teacher, run.artifact("synthesize", "transfer_set"), run.artifact("synthesize", "synthesizer"), config
    )
    return run.run(stage)


def _export(run: RunFolder) -> dict:
    """The teacher and the distilled student to ONNX (run once; the later calls find it up to date)."""
    return run.run(ExportStage({"teacher": LENET, "student": run.artifact("distill", "student")}, ExportConfig()))


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    """synthesize -> distill on the LeNet-5 teacher, shared by the later stages' tests."""
    run = RunFolder(tmp_path_factory.mktemp("stages") / "run")
    _synthesize(run, LENET, "dafl")
    _distill(run, LENET, "lenet5-half")
    return run


@pytest.mark.parametrize(
    "method, options",
    [
        ("bn-inversion", {}),
        ("dafl", {}),
        ("soft-target", {"inner_steps": 2}),
        pytest.param("images", {"path": "fmnist-train", "per_class": 2}, marks=needs_fmnist),
    ],
)
def test_synthesize_then_distill_hands_on_a_transfer_set_and_a_trained_student(method, options, tmp_path):
    teacher = RESNET if method == "bn-inversion" else LENET  # bn-inversion needs BatchNorm layers
    run = RunFolder(tmp_path / "run")
    synthesized = _synthesize(run, teacher, method, **options)
    assert synthesized["metrics"]["method"] == method
    pool = TransferSet.load(run.artifact("synthesize", "transfer_set"))
    assert pool.pixels.dtype == torch.uint8 and len(pool) > 0
    distilled = _distill(run, teacher, "resnet8" if teacher == RESNET else "lenet5-half")
    metrics = distilled["metrics"]
    assert metrics["method"] == method and metrics["student_steps"] > 0
    assert metrics["transfer_set"]["images"] >= len(pool)  # distillation keeps synthesising
    assert (metrics["transfer_set"]["real_images"] > 0) == (method == "images")
    student = load_model(run.artifact("distill", "student"))
    assert student.arch == ("resnet8" if teacher == RESNET else "lenet5-half")
    # a second run of the same stage is skipped: its inputs and config did not change
    assert _distill(run, teacher, student.arch)["finished_at"] == distilled["finished_at"]


@needs_fmnist
def test_real_images_mixed_into_a_synthetic_pool_are_kept_and_counted(tmp_path):
    """--mix-images: a few real (unlabelled) images per class join the synthetic transfer set, in synthesize and
    in the pool distill keeps growing, and the metrics say how many; with --eval, the accuracy curve."""
    mix = resolve_options("images", None, {"path": "fmnist-train", "per_class": 3, "batch_size": 4})
    run = RunFolder(tmp_path / "run")
    synthesized = _synthesize(run, LENET, "dafl", mix=mix)
    assert synthesized["metrics"]["transfer_set"]["real_images"] > 0
    distilled = _distill(run, LENET, "lenet5-half", mix=mix, eval="fmnist")
    transfer = distilled["metrics"]["transfer_set"]
    assert 0 < transfer["real_images"] < transfer["images"]  # mixed in, not instead of the synthetic images
    # --eval: the final student's accuracy closes the curve (labelled images score it; they never train it)
    final = distilled["metrics"]["accuracy_curve"][-1]
    assert final["final"] and 0 <= final["accuracy"] <= 1


def test_export_writes_onnx_that_matches_pytorch(lenet_run):
    entry = _export(lenet_run)
    sources = {"teacher": LENET, "student": lenet_run.artifact("distill", "student")}
    images = torch.randn(8, 1, 28, 28)
    for name, checkpoint in sources.items():
        path = lenet_run.artifact("export", name)
        onnx.checker.check_model(onnx.load(path))
        metrics = entry["metrics"][name]
        assert metrics["parity_max_abs_diff"] <= 1e-4 and metrics["parity_top1_agreement"] == 1.0
        # checked here as well, not only taken from the stage's own word
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        with torch.no_grad():
            expected = load_model(checkpoint).model.eval()(images).numpy()
        assert np.abs(session.run(None, {"input": images.numpy()})[0] - expected).max() <= 1e-4


def test_a_checkpoint_exported_before_is_copied_from_the_export_cache_and_still_checked(tmp_path, monkeypatch):
    """export/onnx_cache.py: the same checkpoint and loading copy the earlier export (same bytes, its parity checked
    again); another checkpoint, a damaged entry or PIPELINE_EXPORT_CACHE=off export afresh."""
    monkeypatch.setenv("PIPELINE_EXPORT_CACHE", str(tmp_path / "cache"))
    preprocess = load_model(LENET).preprocess
    checkpoint, other = tmp_path / "lenet.pt", tmp_path / "other.pt"
    for path in (checkpoint, other):  # two LeNet-5s of their own random weights
        model = create_model("lenet5", in_channels=1, num_classes=10)
        save_checkpoint(path, model, arch="lenet5", preprocess=preprocess, num_classes=10)

    def export(folder: str, path: Path = checkpoint) -> tuple[dict, Path]:
        run = RunFolder(tmp_path / folder)
        stage = ExportStage({"model": path}, ExportConfig())
        planned_cached = stage.cached_models()
        entry = run.run(stage)
        return {**entry["metrics"]["model"], "planned_cached": planned_cached}, run.artifact("export", "model")

    first, first_onnx = export("a")
    assert not first["from_cache"] and first["planned_cached"] == 0
    again, again_onnx = export("b")
    assert again["from_cache"] and again["planned_cached"] == 1 and again["parity_top1_agreement"] == 1.0
    assert sha256_file(again_onnx) == sha256_file(first_onnx)

    assert not export("c", other)[0]["from_cache"]

    # the first checkpoint's entry, its weights changed in place: the same size, wrong logits
    entry = next(path for path in (tmp_path / "cache").glob("*.onnx") if sha256_file(path) == sha256_file(first_onnx))
    proto, size = onnx.load(entry), entry.stat().st_size
    weights = max(proto.graph.initializer, key=lambda tensor: len(tensor.raw_data))
    weights.raw_data = (onnx.numpy_helper.to_array(weights) * 3 + 1).astype(np.float32).tobytes()
    onnx.save(proto, entry)
    assert entry.stat().st_size == size  # so the copy is made, and its parity check is what refuses it
    damaged, damaged_onnx = export("d")
    assert not damaged["from_cache"] and damaged["parity_top1_agreement"] == 1.0
    assert sha256_file(damaged_onnx) == sha256_file(first_onnx)

    monkeypatch.setenv("PIPELINE_EXPORT_CACHE", "off")
    assert not export("e")[0]["from_cache"]


def test_an_unregistered_teacher_is_named_by_its_class_in_the_summary(tmp_path):
    """Issue 22 item 7: a TorchScript CNN no registry knows is "CifarResNet, unregistered" in the summary table,
    not None."""
    from pipeline.run_view import summarize
    from pipeline.teacher_spec import TeacherSpec

    path = tmp_path / "traced.pt"
    model = create_model("resnet8", in_channels=1, num_classes=10).eval()
    torch.jit.save(torch.jit.trace(model, torch.randn(1, 1, 28, 28)), path)
    run = RunFolder(tmp_path / "run")
    config = ExportConfig(specs={"teacher": TeacherSpec(input_shape=(1, 28, 28))})
    exported = run.run(ExportStage({"teacher": path}, config))
    assert exported["metrics"]["teacher"]["arch"] is None
    assert summarize(run)["rows"][0]["arch"] == "CifarResNet, unregistered"


def test_quantize_int8_hands_on_a_qdq_model_verified_against_fp32(lenet_run):
    _export(lenet_run)
    config = QuantizeConfig(precision="int8", runtime="onnxruntime", latency=QUICK_LATENCY, calib_images=32)
    stage = QuantizeStage(
        lenet_run.artifact("export", "student"),
        lenet_run.artifact("distill", "student"),
        lenet_run.artifact("distill", "transfer_set"),
        config,
    )
    metrics = lenet_run.run(stage)["metrics"]
    model = lenet_run.artifact("quantize", "model")
    assert metrics["precision"] == "int8" and metrics["calibration_images"] == 32
    ops = {node.op_type for node in onnx.load(model).graph.node}
    # the format the stage measured fastest is the one written: integer operators, or Q/DQ pairs around float ones
    assert ("QLinearConv" in ops) == (metrics["format"]["operators"] == "qoperator") and holds_qdq(model)
    assert 0 <= metrics["output_error"]["top1_agreement"] <= 1 and metrics["output_error"]["images"] > 0


def test_bench_times_every_model_in_interleaved_rounds(lenet_run):
    _export(lenet_run)
    models = {name: lenet_run.artifact("export", name) for name in ("teacher", "student")}
    latency = spread_over_rounds(LatencySettings(threads=1), warmup=8, runs=12, rounds=4)
    assert (latency.warmup, latency.runs, latency.rounds, latency.max_seconds) == (2, 3, 4, None)
    config = BenchConfig(latency=latency, preprocess=_preprocess(LENET))
    results = lenet_run.run(BenchStage(models, config))["metrics"]
    for name in models:
        latency = results[name]["latency"]
        assert tuple(latency) == LATENCY_RECORD_KEYS  # the one record, in its order
        assert latency["rounds"] == 4 and len(latency["round_medians_ms"]) == 4 and latency["median_ms"] > 0
        assert latency["median_ms"] == np.median(latency["round_medians_ms"]) and results[name]["samples"]["runs"] == 12
        assert (latency["where"], latency["runtime_requested"], latency["runtime_used"]) == ("local",) + (
            "onnxruntime",
        ) * 2
        assert latency["runtime_version"] == results[name]["runtime"]["version"] and latency["includes_transfers"]
        assert latency["flops"] == onnx_flops(models[name]) > 0 and latency["peak_gflops"] is None
        assert latency["achieved_gflops"] == pytest.approx(latency["flops"] / latency["median_ms"] / 1e6)
        assert results[name]["latency_source"] == "local" and results[name]["runtime"]["runtime"] == "onnxruntime"
    assert json.loads((lenet_run.root / "bench" / "bench.json").read_text()) == results


def _named_blocks_drop(blocks: tuple[str, ...], recovery: FeatureKDSettings) -> DropConfig:
    """A drop of the blocks named (no table decides), quick timings and a 2-step recoverability probe."""
    return DropConfig(
        target="cpu",
        latency=QUICK_LATENCY,
        blocks=blocks,
        recoverability=RecoverabilitySettings(steps=2),
        recovery=recovery,
    )


def test_drop_named_blocks_hands_on_a_smaller_model_that_loads_back(tmp_path):
    run = RunFolder(tmp_path / "run")
    _synthesize(run, RESNET)
    config = _named_blocks_drop(("layer2.1", "layer3.1"), FeatureKDSettings(iterations=3, batch_size=16))
    stage = DropStage(RESNET, run.artifact("synthesize", "transfer_set"), config, cache_dir=run.root / "cache")
    metrics = run.run(stage)["metrics"]
    assert metrics["dropped_blocks"] == ["layer2.1", "layer3.1"] and metrics["fused_max_abs_diff"] <= 1e-5
    assert metrics["latency_full_ms"] > 0 and metrics["latency_dropped_ms"] > 0  # measured, in one session
    dropped = load_model(run.artifact("drop", "model"))
    assert dropped.model.dropped_blocks == ["layer2.1", "layer3.1"]
    assert sum(p.numel() for p in dropped.model.parameters()) == metrics["parameters_dropped"]
    assert metrics["parameters_dropped"] < metrics["parameters_full"]


def test_a_drop_stage_behind_its_plan_cuts_its_fine_tune_to_what_is_left_but_never_below_the_floor(tmp_path):
    """The deadline (a build's plan, recipes/build.py) has passed before the fine-tune starts: it runs its floor."""
    run = RunFolder(tmp_path / "run")
    _synthesize(run, RESNET)
    config = _named_blocks_drop(("layer2.1",), FeatureKDSettings(iterations=100_000, batch_size=16, seconds=4.0))
    transfer_set = run.artifact("synthesize", "transfer_set")
    late = DropStage(RESNET, transfer_set, config, cache_dir=run.root / "cache", fine_tune_deadline=time.monotonic())
    metrics = run.run(late)["metrics"]
    given = metrics["finetune_seconds"]
    assert given["configured"] == 4.0 and given["given"] == FINE_TUNE_FLOOR * 4.0 and "behind the plan" in given["note"]
    assert metrics["finetune"]["stopped_by"] == "seconds" and 0 < metrics["finetune"]["iterations"] < 100_000
    assert metrics["phase_s"]["fine_tune"] < 4.0  # the floor's second, and the fold and its check
    assert set(metrics["phase_s"]) == {"table", "selection", "fine_tune", "final_timing"}
    # no deadline (or one far off): the fine-tune keeps its own seconds, never more
    assert fine_tune_seconds(4.0, None, 0.0) == (4.0, None) and fine_tune_seconds(4.0, 100.0, 0.0) == (4.0, None)
    assert fine_tune_seconds(4.0, 3.0, 0.0)[0] == 3.0 and fine_tune_seconds(None, 0.0, 5.0) == (None, None)


def test_engine_stage_without_tensorrt_leaves_the_onnx_and_the_command_for_the_device(lenet_run):
    _export(lenet_run)
    config = EngineConfig(target="jetson-orin-nano", precision="fp16", batch=1, input_shape=(1, 28, 28))
    metrics = lenet_run.run(EngineStage(lenet_run.artifact("export", "student"), config))["metrics"]
    assert metrics["built"] is False
    assert "trtexec" in lenet_run.artifact("engine", "script").read_text()
    assert lenet_run.artifact("engine", "onnx").is_file()


def _preprocess(teacher) -> dict:
    return load_model(teacher).preprocess.to_dict()
