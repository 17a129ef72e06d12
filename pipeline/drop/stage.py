"""`drop` stage: remove the residual blocks that cost the most latency on the target and are easiest to
recover, fine-tune the rest, fold the adapters away. Input: a model checkpoint (which also serves as its own
feature teacher) and, in data-free mode, the transfer set; `images` switches to few-shot mode (N real,
unlabelled images per class). Output: `dropped.pt` (a pipeline checkpoint that records the dropped blocks),
the block latency table, the selection trace."""

import copy
import json
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from pipeline.data.transfer_set import NormalisedImages, TransferSet
from pipeline.drop.blocks import require_block_names, require_blocks
from pipeline.drop.latency_table import (
    additivity,
    cache_key,
    export_for_timing,
    format_table,
    load_or_measure,
    session_estimate_s,
    time_candidate_sets,
    time_models,
)
from pipeline.drop.recover import recover
from pipeline.drop.recoverability import RecoverabilityProbe, RecoverabilitySettings
from pipeline.drop.select import LatencyBudget, TimingShare, expected_probes, greedy_drop
from pipeline.errors import PipelineError
from pipeline.fileio import atomic_write_json, atomic_write_text
from pipeline.kd import FeatureKDSettings
from pipeline.measure import MIN_ROUNDS, LatencySettings, RoundsPolicy
from pipeline.models.checkpoint import save_checkpoint
from pipeline.models.teacher_view import TeacherView
from pipeline.progress import log
from pipeline.stage import Stage, StageOutput, optional_field
from pipeline.teacher_spec import TeacherSpec
from pipeline.training import freeze, seed_everything


@dataclass(frozen=True)
class DropConfig:
    target: str
    latency: LatencySettings
    reduction: float | None = None
    latency_ms: float | None = None
    recoverability: RecoverabilitySettings = field(default_factory=RecoverabilitySettings)
    recovery: FeatureKDSettings = field(default_factory=FeatureKDSettings)
    images: str | None = None  # few-shot: an image folder or fmnist-train; None = data-free (transfer set)
    blocks: tuple[str, ...] | None = optional_field()  # drop exactly these (`--drop-blocks`); None = choose by latency
    per_class: int = 50
    seed: int = 0
    device: str = "auto"
    model: TeacherSpec = field(default_factory=TeacherSpec)


# the later greedy steps' candidate timings together (the table and the final check have their own): a 28-px
# model's take a second or two; a 224-px model's would take minutes each, and then the table's savings stand in
SELECTION_TIMING_SECONDS = 120.0
FINAL_TIMING_SECONDS = 60.0  # the reported full-vs-dropped timing, after its minimum rounds
# a fine-tune cut short by a late stage keeps at least this share of its seconds: a recovery of a few steps
# is worth more than the seconds it costs
FINE_TUNE_FLOOR = 0.25


def fine_tune_seconds(configured: float | None, deadline: float | None, now: float) -> tuple[float | None, str | None]:
    """The recovery fine-tune's seconds when the stage has a deadline for it (the plan's, earlier stages' overrun
    included): what is left until the deadline, never more than its own seconds, never below the floor; and the
    line that says it was cut. The table, probes and timings before it run late when a noisy machine needs more
    rounds than planned, and the fine-tune is the one part that can give time back."""
    if configured is None or deadline is None or deadline - now >= configured:
        return configured, None
    seconds = round(max(FINE_TUNE_FLOOR * configured, deadline - now), 1)
    behind = configured - (deadline - now)
    return seconds, (
        f"drop: {behind:.0f} s behind the plan, so the recovery fine-tune gets {seconds:.0f} s of its "
        f"{configured:.0f} s (at least {FINE_TUNE_FLOOR:.0%})"
    )


def final_rounds(settings: LatencySettings) -> RoundsPolicy:
    """The reported timing: the project's floor of rounds (or the settings' count if lower), more up to the
    settings' rounds while its time share lasts; a remote device runs the settings' rounds."""
    if settings.source == "remote":
        return RoundsPolicy.fixed(settings.rounds)
    return RoundsPolicy(min(settings.rounds, MIN_ROUNDS), settings.rounds, FINAL_TIMING_SECONDS)


class DropStage(Stage):
    name = "drop"
    version = 2  # 2: probes and fine-tune bounded by seconds, the selection's and the final timing's time shares

    def __init__(
        self,
        model_path: Path,
        transfer_set_path: Path | None,
        config: DropConfig,
        cache_dir: Path | None = None,
        fine_tune_deadline: float | None = None,
    ):
        super().__init__(config)
        # `time.monotonic()` by which the recovery fine-tune should end (a build's plan, recipes/build.py): not
        # part of the config, and so of the cache key, for it only moves the end of a loop bounded by seconds
        self.fine_tune_deadline = fine_tune_deadline
        self.model_path = Path(model_path)
        self.transfer_set_path = Path(transfer_set_path) if transfer_set_path is not None else None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if config.images is None and transfer_set_path is None:
            raise PipelineError("data-free block dropping needs a transfer set (run `synthesize` first) or --images")
        if config.blocks is None:
            LatencyBudget(config.reduction, config.latency_ms)  # validate early

    def inputs(self) -> dict[str, Path]:
        inputs = {"model": self.model_path}
        if self.config.images is None:
            inputs["transfer_set"] = self.transfer_set_path
        return inputs

    def run(self, workdir: Path) -> StageOutput:
        from pipeline import distributed

        config = self.config
        started = time.monotonic()
        phase_s = {}  # where the stage's time went, for the plan's comparison with the actual
        seed_everything(config.seed)
        loaded = config.model.load(self.model_path)
        arch = loaded.arch or "unknown"
        device = distributed.local_device(config.device)
        teacher_cpu = freeze(loaded.model)
        blocks = require_blocks(teacher_cpu, f"{self.model_path.name} ({arch})")
        view = TeacherView(freeze(copy.deepcopy(teacher_cpu).to(device)), loaded.preprocess, loaded.num_classes, device)
        images, source = self._images(view)
        if config.blocks is not None:
            require_block_names(teacher_cpu, config.blocks, arch)
        wanted = (
            f"the blocks {', '.join(config.blocks) or '(none)'}"
            if config.blocks is not None
            else LatencyBudget(config.reduction, config.latency_ms).describe()
        )
        log(f"drop: {arch}, {len(blocks)} droppable blocks, {len(images)} {source} images, budget {wanted}")

        if config.blocks is None:
            key = cache_key(arch, config.target, config.latency, loaded.input_shape)
            cache_dir = self.cache_dir or workdir
            cache_file = cache_dir / f"latency-{arch}-{config.target}-{key['runtime']}-{key['runtime_version']}.json"
            table, cached = load_or_measure(cache_file, teacher_cpu, loaded.preprocess, blocks, config.latency, key)
            log(
                ("drop: block latency table (cached)\n" if cached else "drop: block latency table\n")
                + format_table(table)
            )
        else:  # the user chose the blocks: the table would decide nothing (the full-vs-dropped timing still runs)
            table, cached = {"blocks": [], "cv": None, "not_measured": "--drop-blocks named the blocks"}, False
        atomic_write_json(workdir / "latency_table.json", {**table, "from_cache": cached})
        phase_s["table"] = round(time.monotonic() - started, 1)

        probe = RecoverabilityProbe(view.model, images, loaded.input_shape, config.recoverability, config.seed)
        with tempfile.TemporaryDirectory(prefix="edge-pipeline-drop-") as folder:
            full_onnx = export_for_timing(teacher_cpu, loaded.preprocess, folder, "full")  # timed beside each candidate
            selection = self._select(workdir, table, probe, full_onnx, teacher_cpu, loaded.preprocess)
            dropped = selection["dropped"]
            if config.blocks is None and selection["verifications"]:
                # the plan's blocks dropped together, timed against the full model: do the table's savings add up?
                check = selection["verifications"][-1]
                table["additivity"] = additivity(table, dropped, check["full_ms"], check["dropped_ms"])
                atomic_write_json(workdir / "latency_table.json", {**table, "from_cache": cached})
            phase_s["selection"] = round(time.monotonic() - started - phase_s["table"], 1)
            seconds, note = fine_tune_seconds(config.recovery.seconds, self.fine_tune_deadline, time.monotonic())
            if note:
                log(note)
            fine_tune_started = time.monotonic()
            recovered = recover(
                view.model,
                dropped,
                images,
                replace(config.recovery, seconds=seconds),
                workdir,
                input_shape=loaded.input_shape,
                check_images=probe.eval_images[:128],
                seed=config.seed,
            )
            fused, fused_diff = recovered.model, recovered.fused_max_abs_diff
            phase_s["fine_tune"] = round(time.monotonic() - fine_tune_started, 1)
            final_started = time.monotonic()
            timed = time_models(
                {"full": full_onnx, "dropped": fused},
                loaded.preprocess,
                config.latency,
                rounds=final_rounds(config.latency),
                label="latency: full vs dropped",
            )
        phase_s["final_timing"] = round(time.monotonic() - final_started, 1)
        full_ms, dropped_ms = timed["full"]["median_ms"], timed["dropped"]["median_ms"]
        save_checkpoint(
            workdir / "dropped.pt",
            fused,
            arch=arch,
            preprocess=loaded.preprocess,
            num_classes=loaded.num_classes,
            metadata={
                "dropped_blocks": dropped,
                "dropped_from": source_record(self.model_path),
                "data_free": config.images is None,
                "real_images": 0 if config.images is None else len(images),
                **({"source_metadata": loaded.metadata} if loaded.metadata else {}),
            },
        )
        metrics = {
            "arch": arch,
            "dropped_blocks": dropped,
            "blocks_total": len(blocks),
            "data": source,
            "latency_source": config.latency.source,
            "proxy_for": config.latency.proxy_for,
            "measured_on": timed["dropped"].get("measured_on"),
            "images": len(images),
            "real_images": 0 if config.images is None else len(images),
            "latency_full_ms": full_ms,
            "latency_dropped_ms": dropped_ms,
            "latency_reduction": 1 - dropped_ms / full_ms,
            "latency_cv": timed["dropped"]["cv"],
            "table_from_cache": cached,
            "table_cv": table["cv"],
            "additivity_gap": (table.get("additivity") or {}).get("additivity_gap"),
            "fused_max_abs_diff": fused_diff,
            "verifications": selection["verifications"],
            "probe_sizing": selection.get("probe_sizing"),
            "finetune": recovered.finetune,
            "finetune_seconds": {"configured": config.recovery.seconds, "given": seconds, "note": note},
            "phase_s": phase_s,
            "parameters_full": sum(p.numel() for p in teacher_cpu.parameters()),
            "parameters_dropped": sum(p.numel() for p in fused.parameters()),
        }
        reduction = metrics["latency_reduction"]
        # a noisy session can time the dropped model slower than the full one; say so rather than "-12 % lower"
        change = (
            f"{100 * reduction:.1f} % lower"
            if reduction >= 0
            else f"{-100 * reduction:.1f} % higher in this measurement, CV {timed['dropped']['cv']:.2f}"
        )
        log(
            f"drop: dropped {', '.join(dropped) or 'nothing'}; {full_ms:.3f} -> {dropped_ms:.3f} ms "
            f"({change}); fused vs unfused max |diff| {fused_diff:.1e}"
        )
        return StageOutput(
            artifacts={"model": "dropped.pt", "latency_table": "latency_table.json", "selection": "selection.json"},
            metrics=metrics,
        )

    def _images(self, view: TeacherView) -> tuple[torch.Tensor, str]:
        config = self.config
        if config.images is not None:
            from pipeline.synthesize import load_real_images

            data = load_real_images(config.images, view, config.per_class, config.seed)
            return data.images.to(view.device), f"real ({config.per_class} per class)"
        pool = TransferSet.load(self.transfer_set_path)
        if len(pool) == 0:
            raise PipelineError(f"{self.transfer_set_path} holds no images")
        return NormalisedImages(pool.pixels, view.from_uint8, view.device), "transfer-set"

    def _select(
        self, workdir: Path, table: dict, probe: RecoverabilityProbe, full_onnx: Path, teacher_cpu, preprocess
    ) -> dict:
        """Greedy selection; its result is kept in the work folder so an interrupted fine-tune resumes on it."""
        path = workdir / "selection.json"
        if path.is_file():
            return json.loads(path.read_text())
        settings = self.config.latency
        if self.config.blocks is not None:  # the user chose; the latency table is still measured, for the record
            selection = {
                "dropped": list(self.config.blocks),
                "steps": [],
                "verifications": [],
                "chosen_by": "--drop-blocks",
            }
            atomic_write_text(path, json.dumps(selection, indent=1))
            return selection

        def timer(dropped: list[str], candidates: list[str]) -> dict[str, float]:
            return time_candidate_sets(full_onnx, teacher_cpu, dropped, candidates, preprocess, settings)

        # a timed step times the full model, the current one and one per block class left: at 224 px on a CPU one
        # step alone can outlast the share (10 models of 50 ms: ~3 min), so the first is judged before it runs
        classes = len({row.get("class", row["block"]) for row in table["blocks"]})
        first_s = session_estimate_s(settings, table["full_ms"], classes + 2) if table["blocks"] else 0.0
        measure = TimingShare(table, timer, SELECTION_TIMING_SECONDS, first_s)
        budget = LatencyBudget(self.config.reduction, self.config.latency_ms)
        if table["blocks"]:  # a time allowance is spread over the probes this table says are coming
            probe.fit_to(expected_probes(table, budget), [table["blocks"][0]["block"]])
        selection = greedy_drop(table, budget, probe, measure)
        selection["probe_sizing"] = probe.sizing
        selection["timing_s"] = round(measure.spent, 1)
        atomic_write_text(path, json.dumps(selection, indent=1))
        return selection


def source_record(path: Path) -> dict:
    """Which checkpoint a model came from, by name and content: the run folder's location is not part of the
    model (the same build in another folder writes a byte-identical checkpoint)."""
    from pipeline.fileio import sha256_file

    return {"file": path.name, "sha256": sha256_file(path)}
