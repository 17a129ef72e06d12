"""How to load the teacher: the options a stage passes to `load_model`, kept in its config (and cache key)."""

from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.models.load import LoadedModel, load_model
from pipeline.preprocess import PreprocessChoice
from pipeline.stage import optional_field


@dataclass(frozen=True)
class TeacherSpec:
    arch: str | None = None
    input_shape: tuple[int, int, int] | None = None
    num_classes: int | None = None
    trust_checkpoint: bool = False
    preprocess: PreprocessChoice | None = optional_field(None)  # the user's normalisation, over the file's

    def load(self, path: Path) -> LoadedModel:
        loaded = load_model(
            path,
            arch=self.arch,
            trust_checkpoint=self.trust_checkpoint,
            input_shape=self.input_shape,
            num_classes=self.num_classes,
        )
        if self.preprocess is None:
            return loaded
        return replace(
            loaded, preprocess=self.preprocess.apply(loaded.preprocess, path.name), preprocess_source="given"
        )
