"""What a build will cost on this machine, measured before any stage runs (issue 22 item 1, first part).

A few seconds of probing, for this teacher, student and input size: one real synthesis step (the recipe's
synthesizer, at a small batch, scaled to the configured one), one student KD step (teacher forward, student
forward and backward, optimizer step), the teacher's ONNX export and its onnxruntime latency at batch 1.
From them and each stage's config the plan says how many steps a stage will make and how long it will take;
a time-bounded stage whose first step alone costs more than its budget is planned at that step (it always
makes one); the search is planned in search_cost.py. Stages whose cost is not modelled yet (INT8 and binary
quantize, engine) are planned as `None`, and the total says so: an estimate never claims what it does not cover.
"""

import copy
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.drop.latency_table import CHECK_SECONDS, export_for_timing, round_s, session_estimate_s
from pipeline.drop.recoverability import MIN_EVAL_IMAGES
from pipeline.drop.stage import FINAL_TIMING_SECONDS, SELECTION_TIMING_SECONDS
from pipeline.kd import FeatureKDSettings
from pipeline.kd.losses import kd_loss
from pipeline.measure import MIN_ROUNDS, LatencySettings, example_input, latency_samples_ms, make_runner
from pipeline.measure.settings import cpu_model
from pipeline.models import create_model
from pipeline.models.loaded import LoadedModel
from pipeline.models.teacher_view import TeacherView
from pipeline.process_memory import inference_batch
from pipeline.recipes.search_cost import plan_search
from pipeline.synthesize.base import create_synthesizer
from pipeline.training import freeze

PROBE_BATCH = 8  # images per probe step; costs scale linearly with batch on a CPU, and a 224-px step stays short
PROBE_THREADS = 2  # the targets' usual intra-op threads (a proxy for a bench run's cost)
# torch.export (the export stage's) per model: seconds whatever the model plus a multiple of the probe's TorchScript
# export, fitted on the Zen 3 (scale rows 839500a, 77e86d9): ResNet-20@28 0.15 s -> ~4.5 s, ResNet-34@224 1.6 -> ~10.5,
# ResNet-50@224 3.5-3.9 -> 18-27.5 (one factor of 10 over-planned the 224-px exports by 35-50 %)
TORCH_EXPORT_FIXED_S = 3.5
TORCH_EXPORT_OVER_TIMING = 5.5
CHEAP_STEP_S = 1.0  # a step this cheap is timed at its real batch


@dataclass(frozen=True)
class UnitCosts:
    synthesis_step_s: float  # one synthesizer step at the configured batch (timed at synthesis_timed_batch)
    kd_step_s: float  # one student step at the configured batch (timed at kd_timed_batch)
    export_s: float  # the teacher to ONNX with the timing exporter (TorchScript), as latency tables export
    latency_ms: float  # the teacher's ONNX on this machine's onnxruntime, batch 1: what one timed run costs
    forward_ms_per_image: float  # the teacher in PyTorch, no grad: accuracy passes and calibration
    synthesis_batch: int
    kd_batch: int
    synthesis_timed_batch: int | None  # the batch it was timed at (the configured one when that is cheap)
    kd_timed_batch: int | None
    drop_step_s: float  # one fine-tune step of the model blocks are dropped from (recovery, adapter probes)
    drop_timed_batch: int | None
    probe_s: float  # what measuring all this took
    cpu: str
    ort_ms_per_image: float | None = None  # the teacher's ONNX on onnxruntime in batches: label-free estimates, eval

    def to_dict(self) -> dict:
        return asdict(self)


def _timed(step, repeats: int = 2) -> float:
    """Seconds of one call after a warm-up call (lazy kernel selection, allocator)."""
    step()
    _synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    _synchronize()
    return (time.perf_counter() - start) / repeats


def _synchronize() -> None:
    if torch.cuda.is_available():  # GPU work is asynchronous: wait for it before reading the clock
        torch.cuda.synchronize()


def measure_unit_costs(
    teacher: LoadedModel,
    student: str | None,
    synthesizer: str | None,
    synthesis_options: dict,
    kd_batch: int,
    device: torch.device,
    drop_model: "torch.nn.Module | None" = None,
    drop_batch: int = FeatureKDSettings.batch_size,
) -> UnitCosts:
    """`synthesizer` None: the recipe synthesises nothing; `student` None: it trains no student; `drop_model`:
    the model block dropping works on (its fine-tune step: itself as teacher, a copy as student)."""
    started = time.perf_counter()
    torch.manual_seed(0)  # the stages seed themselves when they start
    try:  # a copy: synthesizers hook the teacher's layers (BN inversion)
        model = freeze(copy.deepcopy(teacher.model).to(device))
    except Exception:  # a module that cannot be copied (some TorchScript): the probe leaves no state behind
        model = freeze(teacher.model.to(device))
    view = TeacherView(model, teacher.preprocess, teacher.num_classes, device)
    channels, height, _ = teacher.input_shape
    synthesis_batch = int(synthesis_options.get("batch_size", PROBE_BATCH))
    probe = min(PROBE_BATCH, synthesis_batch, kd_batch)
    critic = None
    if student is not None:
        critic = create_model(student, in_channels=channels, num_classes=teacher.num_classes, image_size=height)
        critic = critic.to(device)

    def synthesis_step_s(batch: int) -> float:
        synth = create_synthesizer(synthesizer, view, {**synthesis_options, "batch_size": batch}, seed=0)
        return _timed(lambda: synth.step(critic if synth.uses_student else None))

    def kd_step_s(batch: int) -> float:
        return _kd_step_s(model, critic, torch.randn(batch, *teacher.input_shape, device=device))

    (synthesis_s, synthesis_timed), (kd_s, kd_timed) = (0.0, None), (0.0, None)
    if synthesizer is not None:
        synthesis_s, synthesis_timed = _at_batch(synthesis_step_s, probe, synthesis_batch)
    if critic is not None:
        kd_s, kd_timed = _at_batch(kd_step_s, probe, kd_batch)
    drop_s, drop_timed = 0.0, None
    if drop_model is not None:
        frozen = freeze(copy.deepcopy(drop_model).to(device))
        trained = copy.deepcopy(drop_model).to(device)
        drop_s, drop_timed = _at_batch(
            lambda batch: _kd_step_s(frozen, trained, torch.randn(batch, *teacher.input_shape, device=device)),
            min(PROBE_BATCH, drop_batch),
            drop_batch,
        )
    # timed at the chunk the no-grad passes (accuracy, calibration, drop's probes) use, where that is the smaller:
    # per image, a forward of large images costs more at a larger batch (process_memory.CHUNK_VALUES)
    forward_batch = min(probe, inference_batch(teacher.input_shape))
    images = torch.randn(forward_batch, *teacher.input_shape, device=device)
    with torch.no_grad():
        forward_s = _timed(lambda: model(images))
    export_s, latency_ms, ort_ms_per_image = _export_and_latency(teacher, forward_batch)
    return UnitCosts(
        synthesis_step_s=synthesis_s,
        kd_step_s=kd_s,
        export_s=export_s,
        latency_ms=latency_ms,
        forward_ms_per_image=1000 * forward_s / forward_batch,
        synthesis_batch=synthesis_batch,
        kd_batch=kd_batch,
        synthesis_timed_batch=synthesis_timed,
        kd_timed_batch=kd_timed,
        drop_step_s=drop_s,
        drop_timed_batch=drop_timed,
        probe_s=round(time.perf_counter() - started, 2),
        cpu=cpu_model(),
        ort_ms_per_image=ort_ms_per_image,
    )


def _at_batch(step_s, probe: int, batch: int) -> tuple[float, int]:
    """One step at `batch`: timed there when the probe says that is cheap (batching is not linear on small
    models), else the probe's time scaled linearly (a 224-px step at batch 128 would take the plan minutes)."""
    scaled = step_s(probe) * batch / probe
    if batch != probe and scaled < CHEAP_STEP_S:
        return step_s(batch), batch
    return scaled, probe


def _kd_step_s(teacher, student, images: torch.Tensor) -> float:
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    student.train()

    def step():
        with torch.no_grad():
            target = teacher(images)
        loss = kd_loss(student(images), target, temperature=4.0)  # the loss every student-training loop uses
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return _timed(step)


def _export_and_latency(teacher: LoadedModel, batch: int) -> tuple[float, float, float]:
    """The timing export's seconds, onnxruntime's batch-1 ms, and its ms per image at `batch` (the accuracy passes)."""
    with tempfile.TemporaryDirectory(prefix="edge-pipeline-costs-") as folder:
        start = time.perf_counter()
        path = export_for_timing(teacher.model, teacher.preprocess, Path(folder), "teacher")  # as tables export
        export_s = time.perf_counter() - start
        example = example_input(LatencySettings(threads=PROBE_THREADS), teacher.preprocess)
        runner = make_runner("onnxruntime", path, PROBE_THREADS)
        latency_ms = float(np.median(latency_samples_ms(runner, example, warmup=2, runs=5, max_seconds=1.0)))
        images = np.repeat(example, batch, axis=0)
        try:
            per_image = float(np.median(latency_samples_ms(runner, images, warmup=1, runs=3))) / batch
        except Exception:  # an export fixed to batch 1 takes no batch: its batch-1 figure stands in
            per_image = latency_ms
    return export_s, latency_ms, per_image


def plan_stages(
    stages: list[tuple[str, dict]], costs: UnitCosts, eval_images: int | None, droppable=None, searchable=None
) -> dict:
    """`stages`: (name, config_dict) in run order, finished ones excluded; `droppable` (a dict or None): the drop
    model's {"blocks", "classes"} (block_classes); `searchable`: {base: the same} for each of the search's base
    models. Returns the manifest's `plan`."""
    planned = []
    pool = None  # the transfer set's images, when this plan's synthesize makes it: the later stages draw from it
    for name, config in stages:
        if name == "drop":
            planned.append(_plan_drop(config, costs, droppable, pool))
        elif name == "search":
            planned.append(plan_search(config, costs, searchable, eval_images, pool))
        else:
            planned.append(_plan_stage(name, config, costs, eval_images, pool))
        steps = planned[-1].get("steps")
        if name == "synthesize":  # a batch a step is kept
            pool = steps * costs.synthesis_batch if steps else None
        elif name == "distill":  # it may grow the pool further (not estimated: no cap after it)
            pool = None
    known = [stage["planned_s"] for stage in planned if stage["planned_s"] is not None]
    return {
        "stages": planned,
        "planned_s": round(sum(known), 1),
        "unplanned": [stage["name"] for stage in planned if stage["planned_s"] is None],
        "cpu": costs.cpu,
        "unit_costs": costs.to_dict(),
    }


def _plan_stage(name: str, config: dict, costs: UnitCosts, eval_images: int | None, pool: int | None = None) -> dict:
    if name == "synthesize":
        return _bounded(name, config, costs.synthesis_step_s, "synthesis steps")
    if name == "distill":
        training = config.get("training") or {}
        kd_steps = int(training.get("kd_steps", 1))
        # a distill step: one synthesizer step (when it keeps running) and kd_steps student steps
        synthesis = costs.synthesis_step_s if config.get("continue_synthesis", True) else 0.0
        entry = _bounded(name, config, synthesis + kd_steps * costs.kd_step_s, f"steps of {kd_steps} KD steps")
        entry["student_steps"] = entry["steps"] * kd_steps if entry["steps"] else None  # what the student gets
        return entry
    if name == "export":  # two models, each at about the teacher's cost with torch.export, less those cached
        exports = max(0, 2 - config.get("cached_models", 0))
        planned = exports * (TORCH_EXPORT_FIXED_S + TORCH_EXPORT_OVER_TIMING * costs.export_s)
        return {"name": name, "steps": None, "unit": "models", "planned_s": round(planned, 1)}
    if name == "bench":
        latency = config["latency"]
        rounds, per_round = latency["rounds"], latency["warmup"] + latency["runs"]
        # the teacher and the handed-on model, both at the teacher's latency: an upper bound
        timing_s = 2 * rounds * per_round * costs.latency_ms / 1000
        accuracy_s = 2 * (eval_images or 0) * costs.forward_ms_per_image / 1000 if config.get("eval") else 0.0
        return {"name": name, "steps": rounds, "unit": "rounds", "planned_s": round(timing_s + accuracy_s, 1)}
    if name == "quantize" and config.get("precision") == "fp16" and not config.get("eval"):
        # a conversion, then the fp32 and fp16 models' logits on the held-back calibration images (at most as
        # many as calibrate), each at about the teacher's batch-1 latency: an upper bound
        # (a small pool is split in halves: quantize/calibration.py)
        held = min(config["calib_images"], pool // 2) if pool else config["calib_images"]
        planned = costs.export_s + 2 * held * costs.latency_ms / 1000
        return {"name": name, "steps": None, "unit": "models", "planned_s": round(planned, 1)}
    return {"name": name, "steps": None, "unit": None, "planned_s": None}  # int8 and binary, engine: no model yet


def _plan_drop(config: dict, costs: UnitCosts, droppable: dict | None, pool: int | None = None) -> dict:
    """The latency table (one variant per block class), the greedy selection (an adapter probe per remaining
    block and a timing of the candidate classes per step, for an estimated number of blocks), the recovery
    fine-tune and the final timing; each from the costs measured here. An estimate: the number of blocks the
    budget needs is not known before the table (here: as if every block saved an equal share)."""
    if droppable is None or costs.drop_step_s <= 0:
        return {"name": "drop", "steps": None, "unit": None, "planned_s": None}
    latency = LatencySettings(**config["latency"])
    blocks, classes = droppable["blocks"], droppable["classes"]
    remote = latency.source == "remote"
    short = round_s(latency, costs.latency_ms)  # one model's short round
    chosen = config.get("blocks")
    elastic_s = 0.0  # the parts bounded by seconds: the probes and the fine-tune (recipes/fit.py)
    if chosen is not None:
        to_drop, table_s, selection_s = len(chosen), 0.0, 0.0
    else:
        share = config.get("reduction") or 0.3  # a millisecond budget: as a 30 % cut (it is not known yet)
        to_drop = min(blocks, max(1, math.ceil(share * (blocks + 2))))
        table_s = (classes + 1) * (session_estimate_s(latency, costs.latency_ms, 1) + costs.export_s)
        probing = config["recoverability"]
        probes = sum(blocks - i for i in range(to_drop))
        # the probes hold back a fifth of a small pool (drop/recoverability.py)
        held = min(probing["eval_images"], max(1, pool // 5)) if pool else probing["eval_images"]
        # each probe: its adapter steps (an adapter step backpropagates through most of the model: as a
        # fine-tune step) and a pass over the held-back images; a time allowance bounds both
        probe_s = probes * (probing["steps"] * costs.drop_step_s + held * costs.forward_ms_per_image / 1000)
        if probing.get("seconds") is not None:
            # within its seconds, but never below a pass over the fewest held-back images a probe keeps
            floor = probes * min(MIN_EVAL_IMAGES, held) * costs.forward_ms_per_image / 1000
            probe_s = max(min(probe_s, probing["seconds"]), floor)
            elastic_s += min(probe_s, probing["seconds"])
            probe_s += 2 * costs.drop_step_s  # sizing the probes to their seconds: two adapter steps timed
        # the plan against the full model: the floor of rounds, more while the check's share lasts
        most = max(latency.rounds, MIN_ROUNDS)
        check_rounds = most if remote else max(MIN_ROUNDS, min(most, int(CHECK_SECONDS / (2 * short))))
        # twice: a first check often misses by the table's additivity gap and the selection drops one more
        check = 2 * 2 * check_rounds * short
        # the steps' candidate classes, each step timed while its cost fits the selection's timing share (the
        # first judged by an estimate: drop/select.py TimingShare), the table's savings after that
        step_timing = session_estimate_s(latency, costs.latency_ms, classes + 2)
        fits = math.floor(SELECTION_TIMING_SECONDS / step_timing) if step_timing > 0 else to_drop
        measured = max(0, min(to_drop - 1, fits))
        timings = measured * step_timing + check
        selection_s = probe_s + timings
    recovery = config["recovery"]
    iterations = recovery["iterations"]
    if recovery.get("seconds") is not None:  # a time-bounded fine-tune ends at its seconds or its iterations
        iterations = min(iterations, max(1, math.ceil(recovery["seconds"] / costs.drop_step_s)))
    recovery_s = iterations * costs.drop_step_s
    if recovery.get("seconds") is not None:
        elastic_s += recovery_s
    final_round_s = 2 * round_s(latency, costs.latency_ms, latency.warmup)  # the full and the dropped model
    final_rounds = latency.rounds
    if not remote:  # the floor of rounds, then more while the final timing's share lasts (drop/stage.py)
        final_rounds = max(min(final_rounds, MIN_ROUNDS), min(final_rounds, int(FINAL_TIMING_SECONDS / final_round_s)))
    final_s = final_rounds * final_round_s
    return {
        "name": "drop",
        "steps": iterations,
        "unit": f"fine-tune iterations (after a {table_s:.0f} s table and ~{to_drop} blocks chosen in "
        f"{selection_s:.0f} s)",
        "unit_s": round(costs.drop_step_s, 4),
        "planned_s": round(table_s + selection_s + recovery_s + final_s, 1),
        "elastic_s": round(elastic_s, 1),
        # the parts as planned, beside the stage's measured `phase_s`; the fine-tune should end by the sum of the
        # first three (recipes/build.py gives the stage that deadline)
        "phases_s": {
            "table": round(table_s, 1),
            "selection": round(selection_s, 1),
            "fine_tune": round(recovery_s, 1),
            "final_timing": round(final_s, 1),
        },
    }


def _bounded(name: str, config: dict, unit_s: float, unit: str) -> dict:
    """A loop bounded by steps (`--steps`) or by seconds: at least one step is always made."""
    if config.get("steps"):
        steps = int(config["steps"])
        return {"name": name, "steps": steps, "unit": unit, "unit_s": round(unit_s, 4), "planned_s": steps * unit_s}
    seconds = float(config["seconds"])
    # the loop starts a step while its time is not spent: the last one ends after the budget
    steps = max(1, math.ceil(seconds / unit_s)) if unit_s > 0 else None
    planned = steps * unit_s if steps else seconds
    entry = {"name": name, "steps": steps, "unit": unit, "unit_s": round(unit_s, 4), "planned_s": round(planned, 1)}
    entry["elastic_s"] = entry["planned_s"]  # bounded by its seconds: a smaller budget shortens it (recipes/fit.py)
    if unit_s > seconds:
        entry["note"] = f"one step costs {unit_s:.0f} s, more than the stage's {seconds:.0f} s budget; it makes one"
    return entry


def nothing_to_plan() -> dict:
    """Every stage is finished (a re-run that only checks them): nothing is probed."""
    return {"stages": [], "planned_s": 0.0, "unplanned": [], "cpu": cpu_model(), "unit_costs": None}
