"""`distill` stage: train the student by KD on the transfer set while the synthesizer keeps producing
(with the student as its critic when the method is adversarial). No labelled image is used for training;
an optional labelled set only draws the accuracy-vs-time curve, on the side (its time is not budget
time), and never selects a checkpoint: the stage hands on its final weights (or their EMA)."""

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipeline import distributed
from pipeline.data.transfer_set import TransferSet
from pipeline.evaluate import accuracy_torch
from pipeline.models import create_model
from pipeline.models.checkpoint import save_checkpoint
from pipeline.process_memory import inference_batch
from pipeline.progress import log
from pipeline.stage import Stage, StageOutput, optional_field
from pipeline.synthesize import (
    DataFreeLoop,
    StudentTraining,
    load_synthesizer,
    merge_rank_pools,
    mix_synthesizer,
    rank_seed,
    save_synthesizer,
    teacher_class_balance,
    teacher_view,
)
from pipeline.teacher_spec import TeacherSpec
from pipeline.training import ResumableLoop, seed_everything


@dataclass(frozen=True)
class DistillConfig:
    student: str
    seconds: float
    seed: int = 0
    steps: int | None = optional_field()  # bound by steps instead of seconds (reproducible: `--steps`)
    training: StudentTraining = field(default_factory=StudentTraining)
    continue_synthesis: bool = True  # keep the synthesizer running during distillation
    eval: str | None = None  # labelled set for the accuracy curve only ('fmnist', a folder, None)
    eval_every_s: float = 0.0  # 0: no curve
    eval_limit: int = 2000
    device: str = "auto"
    mix: dict | None = None  # options of an `images` synthesizer whose real images join the pool
    teacher: TeacherSpec = field(default_factory=TeacherSpec)


class AccuracyCurve:
    """Student accuracy on a labelled set at regular budget-time intervals (monitoring only)."""

    def __init__(self, spec: str | None, preprocess, every_s: float, limit: int):
        self.points: list[dict] = []
        self.every_s, self.next_at = every_s, every_s
        self.data = None
        if spec and distributed.is_main():  # with every_s 0 only the final point is recorded
            from pipeline.data.datasets import load_eval_dataset

            self.data = load_eval_dataset(spec, preprocess, limit)

    def accuracy(self, model) -> float:
        was = model.training
        accuracy = accuracy_torch(model, self.data.images, self.data.labels)
        model.train(was)
        return accuracy

    def tick(self, loop: ResumableLoop, engine: DataFreeLoop) -> None:
        if self.data is None or self.every_s <= 0 or loop.elapsed < self.next_at:
            return
        with loop.paused():
            self.points.append(
                {
                    "seconds": round(loop.elapsed, 1),
                    "step": loop.step,
                    "accuracy": round(self.accuracy(engine.student), 4),
                }
            )
            self.next_at += self.every_s


def parameter_checksum(model) -> str:
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class DistillStage(Stage):
    name = "distill"
    version = 3  # 3: class-balanced KD batches by default

    def __init__(self, teacher_path: Path, transfer_set_path: Path, synthesizer_path: Path, config: DistillConfig):
        super().__init__(config)
        self.teacher_path, self.transfer_set_path = Path(teacher_path), Path(transfer_set_path)
        self.synthesizer_path = Path(synthesizer_path)

    def inputs(self) -> dict[str, Path]:
        return {
            "teacher": self.teacher_path,
            "transfer_set": self.transfer_set_path,
            "synthesizer": self.synthesizer_path,
        }

    def run(self, workdir: Path) -> StageOutput:
        config = self.config
        seed_everything(config.seed)  # same student initialisation on every rank
        view = teacher_view(config.teacher, self.teacher_path, config.device)
        channels, height, _ = view.input_shape
        student = create_model(
            config.student, in_channels=channels, num_classes=view.num_classes, image_size=height
        ).to(view.device)
        seed_everything(rank_seed(config.seed))
        pool = TransferSet.load(self.transfer_set_path)
        synthesizer = (
            load_synthesizer(self.synthesizer_path, view, rank_seed(config.seed)) if config.continue_synthesis else None
        )
        engine = DataFreeLoop(
            view,
            synthesizer,
            pool,
            student,
            config.training,
            rank_seed(config.seed),
            mix=mix_synthesizer(view, config.mix, rank_seed(config.seed)),
        )
        loop = ResumableLoop(workdir, config.seconds, engine.states(), config.steps)
        curve = AccuracyCurve(config.eval, view.preprocess, config.eval_every_s, config.eval_limit)
        method = synthesizer.name if synthesizer is not None else "transfer-set"
        cost = engine.run(loop, f"distill ({config.student}, {method})", lambda lp: curve.tick(lp, engine))
        if synthesizer is not None:
            synthesizer.close()
        final = engine.final_student()
        distributed.average_buffers(final)
        checksums = distributed.gather_objects(parameter_checksum(final))
        pool = merge_rank_pools(pool)
        metrics = {
            "student": config.student,
            "method": method,
            "steps": loop.step,
            "device": str(view.device),
            "world_size": distributed.world_size(),
            "rank_parameter_checksums": checksums,
            "ranks_agree": len(set(checksums)) == 1,
            "first_kd_loss": engine.first_kd,
            "final_kd_loss": engine.last.get("kd"),
            "student_steps": engine.student_steps,
            "cost": cost,
            "synthetic_top1_agreement": synthetic_agreement(view, final, pool),
            "transfer_set": pool.summary(),
            "resumed": loop.resumed,
            "ema": config.training.ema > 0,
            "student_parameters": sum(p.numel() for p in final.parameters()),
            **teacher_class_balance(pool.logits, view.num_classes),
        }
        if curve.data is not None:
            curve.points.append(
                {
                    "seconds": round(loop.elapsed, 1),
                    "step": loop.step,
                    "accuracy": round(curve.accuracy(final), 4),
                    "final": True,
                }
            )
            metrics["accuracy_curve"] = curve.points
        save_checkpoint(
            workdir / "student.pt",
            final.cpu(),
            arch=config.student,
            preprocess=view.preprocess,
            num_classes=view.num_classes,
            metadata={
                "distilled_from": str(self.teacher_path),
                "method": method,
                "steps": loop.step,
                "data_free": method != "images" and not config.mix,
            },
        )
        pool.save(workdir / "transfer_set.pt", method=method)
        artifacts = {"student": "student.pt", "transfer_set": "transfer_set.pt"}
        if synthesizer is not None:
            save_synthesizer(workdir / "synthesizer.pt", synthesizer, config.seed)
            artifacts["synthesizer"] = "synthesizer.pt"
        loop.finish()
        log(
            f"distill: {loop.step} steps, final KD loss {metrics['final_kd_loss']}, top-1 agreement with the teacher "
            f"on held-back transfer images {metrics['synthetic_top1_agreement']}"
        )
        return StageOutput(artifacts=artifacts, metrics=metrics)


@torch.no_grad()
def synthetic_agreement(view, student, pool: TransferSet, samples: int = 1024) -> float | None:
    """Student/teacher top-1 agreement on the newest transfer images: a label-free check that KD worked."""
    if len(pool) == 0:
        return None
    pixels, logits = pool.pixels[-samples:], pool.logits[-samples:].float()
    chunk = inference_batch(pixels.shape[1:])
    predictions = torch.cat(
        [student(view.from_uint8(pixels[i : i + chunk])).argmax(1).cpu() for i in range(0, len(pixels), chunk)]
    )
    return round(float((predictions == logits.argmax(1)).float().mean()), 4)
