"""`synthesize` stage: pre-train a DAFL generator against the frozen teacher for the budget's time."""

from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipeline.fileio import atomic_torch_save
from pipeline.progress import log, progress_bar
from pipeline.stage import Stage, StageOutput
from pipeline.synthesize.dafl import DaflConfig, DaflObjective, cosine_lr, freeze, make_generator
from pipeline.synthesize.preview import save_preview, teacher_class_balance
from pipeline.teacher_spec import TeacherSpec
from pipeline.training import ResumableLoop, seed_everything

GENERATOR_FORMAT = "edge-pipeline/generator-v1"


@dataclass(frozen=True)
class SynthesizeConfig:
    seconds: float
    batch_size: int
    seed: int = 0
    dafl: DaflConfig = field(default_factory=DaflConfig)
    teacher: TeacherSpec = field(default_factory=TeacherSpec)


def save_generator(path: Path, generator, config: DaflConfig, **extra) -> None:
    atomic_torch_save({"format": GENERATOR_FORMAT, "hyperparameters": generator.hyperparameters(),
                       "dafl": config.__dict__, "state_dict": generator.state_dict(), **extra}, path)


def load_generator(path: Path):
    from pipeline.synthesize.generator import Generator

    saved = torch.load(path, weights_only=True)
    hp = saved["hyperparameters"]
    generator = Generator(hp["image_size"], hp["channels"], latent_dim=hp["latent_dim"], width=hp["width"])
    generator.load_state_dict(saved["state_dict"])
    return generator


class SynthesizeStage(Stage):
    name = "synthesize"
    version = 1

    def __init__(self, teacher_path: Path, config: SynthesizeConfig):
        super().__init__(config)
        self.teacher_path = Path(teacher_path)

    def inputs(self) -> dict[str, Path]:
        return {"teacher": self.teacher_path}

    def run(self, workdir: Path) -> StageOutput:
        config = self.config
        seed_everything(config.seed)
        loaded = config.teacher.load(self.teacher_path)
        teacher = freeze(loaded.model)
        channels, height, width = loaded.input_shape
        if height != width:
            raise ValueError("non-square inputs are not supported by the generator yet")
        generator = make_generator(height, channels, config.dafl)
        optimizer = torch.optim.Adam(generator.parameters(), lr=config.dafl.lr_generator, betas=(0.5, 0.999))
        objective = DaflObjective(teacher, config.dafl)
        loop = ResumableLoop(workdir, config.seconds, {"generator": generator, "optimizer": optimizer})
        terms: dict = {}
        generator.train()
        with progress_bar("synthesize (DAFL generator)", None) as bar:
            while loop.running():
                for group in optimizer.param_groups:
                    group["lr"] = cosine_lr(config.dafl.lr_generator, loop.fraction_done)
                images = generator.sample(config.batch_size)
                loss, _, terms = objective(images)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loop.end_step()
                bar.advance()
        objective.close()
        generator.eval()
        balance = teacher_class_balance(teacher, generator, loaded.num_classes)
        save_generator(workdir / "generator.pt", generator, config.dafl)
        save_preview(workdir / "samples.png", generator, loaded.preprocess)
        loop.finish()
        log(f"synthesize: {loop.step} generator steps, teacher confidence {balance['mean_confidence']:.3f}, "
            f"class entropy {balance['class_entropy']:.3f} of {balance['max_entropy']:.3f}")
        return StageOutput(
            artifacts={"generator": "generator.pt", "preview": "samples.png"},
            metrics={"generator_steps": loop.step, "images_generated": loop.step * config.batch_size,
                     "final_loss_terms": terms, "resumed": loop.resumed, **balance},
        )
