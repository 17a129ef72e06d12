"""The settings of a build, each default declared here once (the CLI passes only what the user gave), and the
context every stage factory reads. Light on purpose: `pipeline --help` imports this to show the defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the context's types; importing them here would load torch for `--help`
    from pipeline.budgets import Budget
    from pipeline.models.load import LoadedModel
    from pipeline.preprocess import PreprocessChoice
    from pipeline.recipes.plan import Recipe
    from pipeline.stage import RunFolder
    from pipeline.targets import Target
    from pipeline.teacher_spec import TeacherSpec

STAGE_ORDER = ("synthesize", "distill", "drop", "search", "export", "quantize", "engine", "bench")
DEFAULT_SYNTHESIZER = "auto"  # bn-inversion for teachers with BatchNorm, else dafl


@dataclass
class BuildOptions:
    teacher: str | None = None  # path, 'embedded:NAME' or None for the default teacher
    arch: str | None = None
    target: str = "cpu"
    budget: str = "quick"
    out: Path | None = None
    student: str | None = None
    eval: str | None = None  # 'fmnist', an image folder, 'none'; default: fmnist for the embedded teachers
    input_shape: tuple[int, int, int] | None = None
    num_classes: int | None = None
    trust_checkpoint: bool = False
    preprocess: PreprocessChoice | None = None  # --mean/--std/--channel-order/--pixel-scale/--preprocess
    synthesizer: str = DEFAULT_SYNTHESIZER
    synth_preset: str | None = None
    synth_options: dict = field(default_factory=dict)  # --synth-option key=value overrides
    temperature: float | None = None
    ema: float | None = None
    feature_weight: float | None = None
    kd_steps: int | None = None
    augment: bool | None = None
    class_balance: float | None = None
    device: str = "auto"
    mix_images: str | None = None  # a folder (or fmnist-train) of real images mixed into the transfer set
    mix_per_class: int = 10
    seed: int = 0
    steps: int | None = None  # bound data-free training by steps instead of the budget's seconds (reproducible)
    until: str = "bench"  # the last stage the command runs (`pipeline synthesize`: synthesize)
    force: bool = False
    command: str = ""
    latency_reduction: float | None = None
    latency_ms: float | None = None
    drop_blocks: tuple[str, ...] | None = None  # drop exactly these blocks (no latency-driven selection)
    images: str | None = None  # few-shot drop: real images (a folder or fmnist-train) instead of the transfer set
    per_class: int = 50
    drop_iterations: int | None = None
    drop_lr: float | None = None
    precision: str | None = None  # fp32, fp16, int8, binary; None = the target's precision
    calib: str = "synthetic"  # synthetic (the transfer set) or real (--images)
    calib_method: str = "minmax"
    calib_images: int = 512
    max_accuracy_drop: float = 0.5
    binary_iterations: int | None = None
    binary_coverage: float = 0.9
    host: str | None = None  # "user@device": measure latency and build the engine there (overrides the target's)
    # the command's recipe family (build, drop, search, quantize); `recipes/plan.py::choose_recipe` picks the variant
    recipe: str = "build"
    auto_search: bool = False  # `build` itself: search under the budget when the target file sets one
    max_memory_gib: float = 6.0  # the training batch is lowered until a step fits (recipes/memory.py)


@dataclass
class BuildContext:
    options: BuildOptions
    teacher_path: Path
    teacher: LoadedModel
    spec: TeacherSpec
    target: Target
    budget: Budget
    run: RunFolder
    eval: str | None
    recipe: Recipe  # chosen once by `prepare` (recipes/plan.py::choose_recipe)
    planning: bool = False  # `--plan`: stage factories name earlier stages' artifacts instead of reading them
    student: str | None = None  # the architecture distill trains, chosen once (models/student_choice.py)
    student_note: str | None = None  # what the summary says about that choice, when anything
    memory_note: str | None = None  # the training batch lowered to fit max_memory_gib, when it was
    recipe_note: str | None = None  # why the planner followed another recipe than the command's (deliver.py)
    budget_note: str | None = None  # how the planner fitted the stages' seconds into the budget (fit.py)
    fine_tune_deadline: float | None = None  # when drop's fine-tune should end, by the plan (build.py)

    def artifact(self, stage: str, name: str) -> Path:
        """An earlier stage's artifact; while planning, a placeholder that names it (`@distill/student`)."""
        return Path(f"{PLANNED}{stage}/{name}") if self.planning else self.run.artifact(stage, name)


PLANNED = "@"  # marks a placeholder path: an artifact a stage will read once an earlier stage has written it


def describe_input(path: Path) -> str:
    """How `--plan` shows a stage input: "student from distill" for a placeholder, else the path itself."""
    return f"{path.name} from {path.parent.name.removeprefix(PLANNED)}" if str(path).startswith(PLANNED) else str(path)
