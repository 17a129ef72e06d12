"""`distill` stage: train the student by KD on generator samples, continuing the generator jointly as DAFL does.

Each step: x = G(z); the generator takes a DAFL step on x (if `joint_generator`), then the student
takes a KD step on x.detach() against the teacher's logits. The stage sees no labelled data and
hands on its final weights (no checkpoint selection).
"""

from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipeline.models import create_model
from pipeline.models.checkpoint import save_checkpoint
from pipeline.progress import log, progress_bar
from pipeline.stage import Stage, StageOutput
from pipeline.synthesize.dafl import DaflConfig, DaflObjective, cosine_lr, freeze
from pipeline.synthesize.losses import kd_loss
from pipeline.synthesize.preview import chunked_sample_logits, diagnostic_sample_count
from pipeline.synthesize.stage import load_generator, save_generator
from pipeline.teacher_spec import TeacherSpec
from pipeline.training import ResumableLoop, seed_everything


@dataclass(frozen=True)
class DistillConfig:
    student: str
    seconds: float
    batch_size: int
    seed: int = 0
    lr_student: float = 2e-3  # DAFL's MNIST setting (Adam)
    temperature: float = 1.0  # DAFL's public code uses tau = 1
    joint_generator: bool = True
    dafl: DaflConfig = field(default_factory=DaflConfig)
    teacher: TeacherSpec = field(default_factory=TeacherSpec)


class DistillStage(Stage):
    name = "distill"
    version = 1

    def __init__(self, teacher_path: Path, generator_path: Path, config: DistillConfig):
        super().__init__(config)
        self.teacher_path, self.generator_path = Path(teacher_path), Path(generator_path)

    def inputs(self) -> dict[str, Path]:
        return {"teacher": self.teacher_path, "generator": self.generator_path}

    def run(self, workdir: Path) -> StageOutput:
        config = self.config
        seed_everything(config.seed)
        loaded = config.teacher.load(self.teacher_path)
        teacher = freeze(loaded.model)
        channels, height, _ = loaded.input_shape
        student = create_model(config.student, in_channels=channels, num_classes=loaded.num_classes, image_size=height)
        generator = load_generator(self.generator_path)
        student_optimizer = torch.optim.Adam(student.parameters(), lr=config.lr_student)
        generator_optimizer = torch.optim.Adam(generator.parameters(), lr=config.dafl.lr_generator, betas=(0.5, 0.999))
        objective = DaflObjective(teacher, config.dafl)
        loop = ResumableLoop(workdir, config.seconds, {"student": student, "generator": generator,
                                                       "student_optimizer": student_optimizer,
                                                       "generator_optimizer": generator_optimizer})
        kd = torch.zeros(())
        student.train()
        generator.train()
        with progress_bar(f"distill ({config.student})", None) as bar:
            while loop.running():
                student_optimizer.param_groups[0]["lr"] = cosine_lr(config.lr_student, loop.fraction_done)
                generator_optimizer.param_groups[0]["lr"] = cosine_lr(config.dafl.lr_generator, loop.fraction_done)
                images = generator.sample(config.batch_size)
                if config.joint_generator:
                    generator_loss, teacher_logits, _ = objective(images)
                    generator_optimizer.zero_grad(set_to_none=True)
                    generator_loss.backward()
                    generator_optimizer.step()
                else:
                    with torch.no_grad():
                        teacher_logits = teacher(images)
                images, teacher_logits = images.detach(), teacher_logits.detach()
                kd = kd_loss(student(images), teacher_logits, config.temperature)
                student_optimizer.zero_grad(set_to_none=True)
                kd.backward()
                student_optimizer.step()
                loop.end_step()
                bar.advance()
        objective.close()
        student.eval()
        generator.eval()
        agreement = synthetic_agreement(teacher, student, generator)
        save_checkpoint(workdir / "student.pt", student, arch=config.student, preprocess=loaded.preprocess,
                        num_classes=loaded.num_classes,
                        metadata={"distilled_from": str(self.teacher_path), "teacher_arch": loaded.arch,
                                  "method": "dafl", "steps": loop.step})
        save_generator(workdir / "generator.pt", generator, config.dafl)
        loop.finish()
        log(f"distill: {loop.step} steps, final KD loss {kd.item():.4f}, "
            f"top-1 agreement with the teacher on fresh synthetic images {agreement:.3f}")
        return StageOutput(
            artifacts={"student": "student.pt", "generator": "generator.pt"},
            metrics={"student": config.student, "steps": loop.step, "images_seen": loop.step * config.batch_size,
                     "final_kd_loss": kd.item(), "synthetic_top1_agreement": agreement, "resumed": loop.resumed,
                     "student_parameters": sum(p.numel() for p in student.parameters())},
        )


def synthetic_agreement(teacher, student, generator) -> float:
    """How often student and teacher agree on generator samples: a label-free training signal check."""
    samples = diagnostic_sample_count(generator.image_size)
    teacher_logits, student_logits = chunked_sample_logits([teacher, student], generator, samples, seed=1)
    return float((teacher_logits.argmax(1) == student_logits.argmax(1)).float().mean())
