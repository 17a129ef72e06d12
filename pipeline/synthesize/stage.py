"""`synthesize` stage: run a synthesizer against the frozen teacher for its time budget and keep the result
as a transfer set (uint8 images + teacher logits) and a synthesizer checkpoint that `distill` continues."""

from dataclasses import dataclass, field
from pathlib import Path

from pipeline import distributed
from pipeline.data.transfer_set import TransferSet, default_capacity
from pipeline.progress import log
from pipeline.stage import Stage, StageOutput, optional_field
from pipeline.synthesize.base import create_synthesizer
from pipeline.synthesize.data_free_loop import DataFreeLoop, StudentTraining
from pipeline.synthesize.preview import save_preview, teacher_class_balance
from pipeline.synthesize.session import merge_rank_pools, mix_synthesizer, rank_seed, teacher_view
from pipeline.synthesize.state import save_synthesizer
from pipeline.teacher_spec import TeacherSpec
from pipeline.training import ResumableLoop, seed_everything


@dataclass(frozen=True)
class SynthesizeConfig:
    seconds: float
    method: str = "bn-inversion"
    steps: int | None = optional_field()  # bound by steps instead of seconds (reproducible: `--steps`)
    options: dict = field(default_factory=dict)  # fully resolved (defaults + preset + overrides)
    seed: int = 0
    capacity: int | None = None  # transfer-set images kept (default: by image size, ~256 MB)
    device: str = "auto"
    mix: dict | None = None  # options of an `images` synthesizer whose real images join the pool
    teacher: TeacherSpec = field(default_factory=TeacherSpec)


class SynthesizeStage(Stage):
    name = "synthesize"
    version = 2

    def __init__(self, teacher_path: Path, config: SynthesizeConfig):
        super().__init__(config)
        self.teacher_path = Path(teacher_path)

    def inputs(self) -> dict[str, Path]:
        return {"teacher": self.teacher_path}

    def run(self, workdir: Path) -> StageOutput:
        config = self.config
        seed_everything(rank_seed(config.seed))
        view = teacher_view(config.teacher, self.teacher_path, config.device)
        synthesizer = create_synthesizer(config.method, view, config.options, rank_seed(config.seed))
        pool = TransferSet(view.input_shape, view.num_classes, config.capacity or default_capacity(view.input_shape))
        engine = DataFreeLoop(
            view,
            synthesizer,
            pool,
            None,
            StudentTraining(),
            rank_seed(config.seed),
            mix=mix_synthesizer(view, config.mix, rank_seed(config.seed)),
        )
        loop = ResumableLoop(workdir, config.seconds, engine.states(), config.steps)
        cost = {}
        if config.method == "images":  # nothing to optimise: the folder's images are the transfer set
            if len(pool) == 0:
                engine.add_images(synthesizer.step(), real=True)
        else:
            cost = engine.run(loop, f"synthesize ({config.method})")
        synthesizer.close()
        pool = merge_rank_pools(pool)
        pool.save(workdir / "transfer_set.pt", method=config.method, options=config.options)
        save_synthesizer(workdir / "synthesizer.pt", synthesizer, config.seed)
        save_preview(workdir / "samples.png", pool.pixels[:64])
        loop.finish()
        balance = teacher_class_balance(pool.logits, view.num_classes)
        log(
            f"synthesize: {loop.step} steps, {len(pool)} images, teacher confidence {balance.get('mean_confidence')}, "
            f"class entropy {balance.get('class_entropy')} of {balance.get('max_entropy')}"
        )
        return StageOutput(
            artifacts={"transfer_set": "transfer_set.pt", "synthesizer": "synthesizer.pt", "preview": "samples.png"},
            metrics={
                "method": config.method,
                "steps": loop.step,
                "device": str(view.device),
                "world_size": distributed.world_size(),
                "transfer_set": pool.summary(),
                "final_loss_terms": getattr(synthesizer, "last_terms", {}),
                "resumed": loop.resumed,
                "cost": cost,
                **balance,
            },
        )
