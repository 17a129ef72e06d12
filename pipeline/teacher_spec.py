"""How to load the teacher: the options a stage passes to `load_model`, kept in its config (and cache key)."""

from dataclasses import dataclass
from pathlib import Path

from pipeline.models.load import LoadedModel, load_model


@dataclass(frozen=True)
class TeacherSpec:
    arch: str | None = None
    input_shape: tuple[int, int, int] | None = None
    num_classes: int | None = None
    trust_checkpoint: bool = False

    def load(self, path: Path) -> LoadedModel:
        return load_model(
            path,
            arch=self.arch,
            trust_checkpoint=self.trust_checkpoint,
            input_shape=self.input_shape,
            num_classes=self.num_classes,
        )
