"""`search` stage: the most accurate model that meets a latency budget, found by measuring.

Cheap before expensive:
1. once per base model (cached in <run>/cache/): the block latency table, the PRACTISE drop order (adapter-only
   recoverability probes) and the full model's speed-up at each precision, all measured on the target's runner;
2. every (base, blocks dropped, precision) gets a *predicted* latency; only the few next to the budget line are
   built (fine-tuned when blocks go, then exported and quantised) — each cached by content;
3. the short list is timed in one interleaved session with the teacher, and each candidate's accuracy is
   estimated without labels: the expected top-1 loss against the teacher on held-back synthetic images that no
   fine-tune saw (a labelled --eval set, when given, is measured beside it for calibration, never for choosing);
4. the most accurate candidate whose *measured* latency meets the budget is handed on.
Measurements land in <run>/cache/search/, so a second search with another budget reuses them.
"""

import copy
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.data.transfer_set import NormalisedImages, TransferSet
from pipeline.drop import (
    LatencyBudget,
    RecoverabilityProbe,
    RecoverabilitySettings,
    block_latency_table,
    block_table_key,
    droppable_blocks,
)
from pipeline.errors import PipelineError
from pipeline.fileio import atomic_write_json, atomic_write_text, sha256_file, sha256_json
from pipeline.kd import FeatureKDSettings
from pipeline.measure import LatencySettings, example_input, paired_ratio, time_onnx_models
from pipeline.measure.paired import TOO_BUSY_SPREAD
from pipeline.models.teacher_view import TeacherView
from pipeline.progress import log
from pipeline.quantize import expected_accuracy_drop, logits, normalised
from pipeline.runtimes import judged_as_written
from pipeline.search.candidate_models import CandidateModels
from pipeline.search.report import explain, predicted_rows, write_front
from pipeline.search.space import Candidate, practise_order, shortlist
from pipeline.stage import Stage, StageOutput, optional_field
from pipeline.teacher_spec import TeacherSpec
from pipeline.training import freeze, seed_everything

SEARCHABLE_PRECISIONS = ("fp32", "fp16", "int8")  # binary runs on the same INT8 kernels as int8 and is less accurate


@dataclass(frozen=True)
class SearchConfig:
    target: str
    latency: LatencySettings
    reduction: float | None = None
    latency_ms: float | None = None
    precisions: tuple[str, ...] = ("fp32",)
    recoverability: RecoverabilitySettings = field(default_factory=RecoverabilitySettings)
    recovery: FeatureKDSettings = field(default_factory=FeatureKDSettings)
    # the fine-tunes of one base's short list together (an equal share each, candidate_models.py); None: by
    # iterations alone. recoverability.seconds bounds one base's PRACTISE-order probes the same way
    fine_tune_seconds: float | None = optional_field()
    held_out: int = 2048  # synthetic images kept away from every fine-tune, for the accuracy estimate
    margin: float = 0.03  # a candidate must beat the budget by this fraction: the next session may measure it slower
    calib_images: int = 512
    speedup_rounds: int = 20
    eval: str | None = None  # labelled set: measured beside the estimate, for calibration only
    eval_limit: int | None = None
    seed: int = 0
    device: str = "auto"
    teacher: TeacherSpec = field(default_factory=TeacherSpec)


MEASURE_ATTEMPTS = 3  # sessions measured before a too-busy one is kept


class SearchStage(CandidateModels, Stage):
    name = "search"
    version = 3  # 2: paired ratios by the measurement layer (trimmed mean); TensorRT INT8 judged as written; 3: timing exports

    def __init__(
        self,
        teacher_path: Path,
        student_path: Path | None,
        transfer_set_path: Path,
        config: SearchConfig,
        cache_dir: Path,
    ):
        super().__init__(config)
        self.teacher_path, self.transfer_set_path = Path(teacher_path), Path(transfer_set_path)
        self.student_path = Path(student_path) if student_path is not None else None
        self.cache = Path(cache_dir)
        self.fine_tunes: dict[str, int] = {}  # per base: the distinct block sets its short list fine-tunes
        LatencyBudget(config.reduction, config.latency_ms)  # validate early

    def inputs(self) -> dict[str, Path]:
        inputs = {"teacher": self.teacher_path, "transfer_set": self.transfer_set_path}
        if self.student_path is not None:
            inputs["student"] = self.student_path
        return inputs

    # --- the steps ---------------------------------------------------------------------------------------
    def run(self, workdir: Path) -> StageOutput:
        from pipeline import distributed

        config = self.config
        started = time.monotonic()
        seed_everything(config.seed)
        self.device = distributed.local_device(config.device)
        (self.cache / "search").mkdir(parents=True, exist_ok=True)
        teacher = config.teacher.load(self.teacher_path)
        self.preprocess, self.num_classes, self.input_shape = (
            teacher.preprocess,
            teacher.num_classes,
            teacher.input_shape,
        )
        pool = TransferSet.load(self.transfer_set_path)
        held = min(config.held_out, max(1, len(pool) // 5))
        if len(pool) - held < 1:
            raise PipelineError(f"{self.transfer_set_path} holds too few images ({len(pool)}) to search with")
        self.train_pixels, self.held_images = pool.pixels[:-held], normalised(pool.pixels[-held:], self.preprocess)
        self.pool_hash = sha256_file(self.transfer_set_path)
        self.bases = {"teacher": (self.teacher_path, teacher)}
        if self.student_path is not None:
            self.bases["student"] = (self.student_path, TeacherSpec().load(self.student_path))
        self.teacher_onnx = self._fp32_onnx("teacher", ())
        self.teacher_logits = logits(self.teacher_onnx, self.held_images)

        facts = {name: self._base_facts(name, loaded) for name, (_, loaded) in self.bases.items()}
        phase_s: dict[str, float] = {}  # where the time went, beside the plan's phases

        def phase_ends(name: str) -> None:  # the seconds since the last phase ended
            phase_s[name] = round(time.monotonic() - started - sum(phase_s.values()), 1)

        phase_ends("bases")
        teacher_ms = facts["teacher"]["full_ms"]
        budget = LatencyBudget(config.reduction, config.latency_ms)
        limit_ms = budget.limit_ms(teacher_ms)
        log(
            f"search: budget {budget.describe()} = {limit_ms:.3f} ms (teacher {teacher_ms:.3f} ms on "
            f"{config.latency.runtime}{', proxy for ' + config.latency.proxy_for if config.latency.proxy_for else ''})"
        )
        candidates = shortlist(facts, list(config.precisions), limit_ms)
        log(f"search: {len(candidates)} candidates on the short list: " + ", ".join(c.name for c in candidates))
        self.fine_tunes = {
            base: len({c.dropped for c in candidates if c.base == base and c.dropped}) for base in self.bases
        }
        records = {candidate.name: self._evaluate(candidate, facts) for candidate in candidates}
        phase_ends("candidates")
        self._measure(records, limit_ms, budget)
        phase_ends("timing")
        self._calibrate(records)
        phase_ends("calibration")
        chosen = self._choose(records, limit_ms, budget)

        chosen_checkpoint = self._checkpoint(chosen["candidate"])
        shutil.copyfile(chosen_checkpoint, workdir / "model.pt")
        rows = predicted_rows(facts, config.precisions, limit_ms, records)
        write_front(rows, chosen, limit_ms, workdir / "pareto.csv", workdir / "pareto.png")
        explanation = explain(chosen, records, limit_ms, budget.describe(), config.latency, config.margin)
        atomic_write_text(workdir / "choice.md", explanation + "\n")
        result = {
            "budget": budget.describe(),
            "limit_ms": limit_ms,
            "teacher_ms": teacher_ms,
            "chosen": {k: v for k, v in chosen.items() if k != "candidate"},
            "precision": chosen["precision"],
            "int8_format": facts[chosen["base"]].get("int8_format") if chosen["precision"] == "int8" else None,
            "candidates": {name: {k: v for k, v in r.items() if k != "candidate"} for name, r in records.items()},
            "bases": facts,
            "explanation": explanation,
            "latency_source": config.latency.source,
            "proxy_for": config.latency.proxy_for,
        }
        atomic_write_json(workdir / "search.json", result)
        log("search: " + explanation)
        return StageOutput(
            artifacts={
                "model": "model.pt",
                "report": "search.json",
                "pareto_csv": "pareto.csv",
                "pareto_png": "pareto.png",
                "choice": "choice.md",
            },
            metrics={k: v for k, v in result.items() if k not in ("candidates", "bases")}
            | {"shortlist": list(records), "fine_tunes": self.fine_tunes, "phase_s": phase_s},
        )

    def _base_facts(self, base: str, loaded) -> dict:
        """Measured once per base model (cached): latency table, PRACTISE order, speed-up per precision."""
        config = self.config
        path = self.bases[base][0]
        key = sha256_json(
            {
                "model": sha256_file(path),
                "pool": self.pool_hash,
                "latency": config.latency.to_dict(),
                "recoverability": config.recoverability.to_dict(),
                "precisions": config.precisions,
                "calib": config.calib_images,
                "rounds": config.speedup_rounds,
                "seed": config.seed,
            }
        )[:16]
        cache_file = self.cache / "search" / f"base-{base}-{key}.json"
        if cache_file.is_file():
            log(f"search: {base}: latency table, drop order and speed-ups from the cache")
            return json.loads(cache_file.read_text())
        model = freeze(loaded.model)
        arch = loaded.arch or "unknown"
        blocks = droppable_blocks(model)
        order, full_ms = [], None
        if blocks:
            table_key = block_table_key(arch, config.target, config.latency, loaded.input_shape)
            table_file = (
                self.cache
                / f"latency-{arch}-{config.target}-{table_key['runtime']}-{table_key['runtime_version']}.json"
            )
            table, _ = block_latency_table(table_file, model, loaded.preprocess, blocks, config.latency, table_key)
            view = TeacherView(
                freeze(copy.deepcopy(model).to(self.device)), loaded.preprocess, loaded.num_classes, self.device
            )
            probe = RecoverabilityProbe(
                view.model, self._train_images(), loaded.input_shape, config.recoverability, config.seed
            )
            probe.fit_to(len(blocks) * (len(blocks) + 1) // 2, [blocks[0].name])  # the whole order's probes
            log(f"search: {base}: PRACTISE drop order ({len(blocks)} blocks, adapter-only probes)")
            order = practise_order(table, probe)
        fp32 = self._fp32_onnx(base, ())
        variants = {precision: self._precision_onnx(base, (), precision, fp32) for precision in config.precisions}
        timed = time_onnx_models(
            variants,
            config.latency,
            example_input(config.latency, self.preprocess),
            config.speedup_rounds,
            label=f"search: {base} at each precision",
        )
        full_ms = timed["fp32"]["median_ms"]
        speedups = {precision: full_ms / entry["median_ms"] for precision, entry in timed.items()}
        int8_report = variants.get("int8", fp32).with_suffix(".int8.json")
        int8_format = json.loads(int8_report.read_text())["format"] if int8_report.is_file() else None
        log(
            f"search: {base}: full model {full_ms:.3f} ms; speed-up "
            + ", ".join(f"{p} {s:.2f}x" for p, s in speedups.items())
        )
        facts = {
            "arch": arch,
            "full_ms": full_ms,
            "order": order,
            "speedups": speedups,
            "int8_format": int8_format,
            "measured_on": timed["fp32"].get("measured_on"),
        }
        atomic_write_json(cache_file, facts)
        return facts

    def _train_images(self) -> NormalisedImages:
        view_input = TeacherView(None, self.preprocess, self.num_classes, self.device).from_uint8
        return NormalisedImages(self.train_pixels, view_input, self.device)

    def _evaluate(self, candidate: Candidate, facts: dict) -> dict:
        """Build the candidate and estimate its accuracy without labels (cached)."""
        fp32 = self._fp32_onnx(candidate.base, candidate.dropped)
        onnx_path = self._precision_onnx(
            candidate.base, candidate.dropped, candidate.precision, fp32, facts[candidate.base].get("int8_format")
        )
        cache_file = onnx_path.with_suffix(".estimate.json")
        if cache_file.is_file():
            record = json.loads(cache_file.read_text())
        else:
            # a TensorRT-bound INT8 candidate is judged as TensorRT computes it, not by this CPU's kernels
            predicted = logits(
                onnx_path, self.held_images, as_written=judged_as_written(self._deployed_runtime(), candidate.precision)
            )
            drop = expected_accuracy_drop(self.teacher_logits, predicted)
            record = {
                "expected_loss_vs_teacher": drop,
                "agreement": float((predicted.argmax(1) == self.teacher_logits.argmax(1)).mean()),
                "held_out_images": int(len(self.held_images)),
                "onnx_bytes": onnx_path.stat().st_size,
            }
            atomic_write_json(cache_file, record)
        return {**candidate.to_dict(), **record, "onnx": str(onnx_path), "candidate": candidate}

    def _measure(self, records: dict, limit_ms: float, budget: LatencyBudget) -> None:
        """Time the whole short list with the teacher in ONE fresh interleaved session, every search: on this
        kind of machine two sessions can disagree by 10-15 % on the same pair, so a decision at the budget line
        must not mix them (the expensive work, fine-tunes and exports, is what the cache keeps). Each candidate's
        ratio to the teacher is the measurement layer's paired ratio (trimmed mean of its per-round ratios, as the
        gate judges), so drift during the session cancels; it must meet the budget with `margin` to spare."""
        config = self.config
        paths = {name: Path(r["onnx"]) for name, r in records.items()}
        for attempt in range(1, MEASURE_ATTEMPTS + 1):
            timed = time_onnx_models(
                {"__teacher__": self.teacher_onnx, **paths},
                config.latency,
                example_input(config.latency, self.preprocess),
                config.latency.rounds,
                label=f"search: timing {len(paths)} candidate(s) with the teacher",
            )
            teacher_rounds = np.asarray(timed["__teacher__"]["round_medians_ms"])
            paired = {name: paired_ratio(timed[name]["round_medians_ms"], teacher_rounds) for name in records}
            spread = max(ratio.spread for ratio in paired.values())
            if spread <= TOO_BUSY_SPREAD:
                break
            # the gate's rule: per-round ratios this scattered mean the machine was too busy to compare (a burst on
            # the teacher's rounds once made a 97 % reduction look met); measure the session again
            log(
                f"[yellow]search: the per-round ratios vary by {100 * spread:.0f} % (CV): the machine was too busy; "
                f"{'measuring again' if attempt < MEASURE_ATTEMPTS else 'keeping this session'}[/yellow]"
            )
        teacher_ms = timed["__teacher__"]["median_ms"]
        log_file = self.cache / "search" / "latency-sessions.jsonl"  # every measurement, for the record
        with open(log_file, "a") as handle:
            handle.write(
                json.dumps(
                    {
                        "teacher_ms": teacher_ms,
                        "settings": config.latency.to_dict(),
                        "models": {Path(r["onnx"]).name: timed[n]["median_ms"] for n, r in records.items()},
                    }
                )
                + "\n"
            )
        for name, record in records.items():
            ratio = paired[name].ratio
            record.update(
                latency_ms=timed[name]["median_ms"],
                latency_cv=timed[name]["cv"],
                teacher_ms_same_session=teacher_ms,
                ratio_to_teacher=ratio,
                ratio_interval=[paired[name].low, paired[name].high],
                reduction_vs_teacher=1 - ratio,
                measured_on=timed[name].get("measured_on"),
            )
            allowed = (1 - budget.reduction) if budget.reduction is not None else limit_ms / teacher_ms
            record["meets_budget"] = ratio <= allowed * (1 - config.margin)

    def _calibrate(self, records: dict) -> None:
        """With a labelled set: each candidate's real accuracy beside its estimate (for the report and a linear
        calibration of the estimate; the choice never looks at it)."""
        if not self.config.eval:
            return
        from pipeline.data.datasets import load_eval_dataset
        from pipeline.measure.accuracy import accuracy_with_runner
        from pipeline.runtimes import OnnxRuntimeRunner

        data = load_eval_dataset(self.config.eval, self.preprocess, self.config.eval_limit)
        for record in records.values():
            cache_file = Path(record["onnx"]).with_suffix(
                f".accuracy-{sha256_json([self.config.eval, self.config.eval_limit])[:8]}.json"
            )
            if cache_file.is_file():
                record["accuracy"] = json.loads(cache_file.read_text())["accuracy"]
                continue
            with OnnxRuntimeRunner(Path(record["onnx"])) as runner:
                record["accuracy"] = accuracy_with_runner(runner, data.images, data.labels)
            atomic_write_json(cache_file, {"accuracy": record["accuracy"], "eval": self.config.eval})
        estimates = np.array([1 - r["expected_loss_vs_teacher"] for r in records.values()])
        accuracies = np.array([r["accuracy"] for r in records.values()])
        if len(records) >= 3 and estimates.std() > 0 and accuracies.std() > 0:
            slope, intercept = np.polyfit(estimates, accuracies, 1)
            correlation = float(np.corrcoef(estimates, accuracies)[0, 1])
            for record in records.values():
                record["calibrated_accuracy"] = float(intercept + slope * (1 - record["expected_loss_vs_teacher"]))
                record["calibration"] = {
                    "slope": float(slope),
                    "intercept": float(intercept),
                    "correlation": correlation,
                }

    def _choose(self, records: dict, limit_ms: float, budget: LatencyBudget) -> dict:
        meeting = [r for r in records.values() if r["meets_budget"]]
        if not meeting:
            fastest = min(records.values(), key=lambda r: r["latency_ms"])
            raise PipelineError(
                f"nothing meets {budget.describe()} ({limit_ms:.3f} ms): the fastest model found, "
                f"{fastest['candidate'].describe()}, measured {fastest['latency_ms']:.3f} ms"
            )
        # most accurate by the label-free estimate; among equals, the faster
        return min(meeting, key=lambda r: (round(r["expected_loss_vs_teacher"], 4), r["latency_ms"]))
