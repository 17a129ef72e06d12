"""Which stages a command runs: one explicit recipe per command (and per variant of `build`, `drop` and
`quantize`), its stages in order, each with the condition, if any, that decides it. Which recipe a run follows
is chosen once, by `choose_recipe`, from the command and its settings, before anything runs; the stage factories
then ask the recipe (which model is handed on, where the transfer set comes from), never the command. `--plan`
prints the recipe and its stages."""

from dataclasses import dataclass

from pipeline.recipes.options import STAGE_ORDER, BuildOptions
from pipeline.recipes.resolve import precision_setting
from pipeline.targets import Target

# the conditions a step may carry
QUANTISED = "the handed-on precision is not fp32"  # after a budget search: the precision the search chose
TENSORRT = "the target runs TensorRT"


@dataclass(frozen=True)
class Step:
    stage: str
    when: str | None = None  # one of the conditions above; None: always

    def describe(self) -> str:
        return self.stage if self.when is None else f"{self.stage} (when {self.when})"


@dataclass(frozen=True)
class Recipe:
    """One command's stages in order, and what follows from them: which model the later stages take, where the
    transfer set comes from. Stage factories ask the recipe, never the command."""

    name: str
    command: str  # the family of commands that follows it: build (and synthesize, distill), drop, search, quantize
    steps: tuple[Step, ...]
    # the latency cut drop aims at when neither the flags nor the target give a budget (None: one is required)
    default_reduction: float | None = None

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(step.stage for step in self.steps)

    @property
    def model_from(self) -> str:
        """The stage whose model export, quantize and the engine take ("teacher": the teacher itself)."""
        return next((stage for stage in ("search", "drop", "distill") if stage in self.stages), "teacher")

    @property
    def trains_a_student(self) -> bool:
        return "distill" in self.stages


COMPRESS_TEACHER = "build, the teacher compressed (too few KD steps for a student)"
_HAND_ON = (Step("export"), Step("quantize", QUANTISED), Step("engine", TENSORRT), Step("bench"))
_RECIPES = (
    Recipe("build", "build", (Step("synthesize"), Step("distill"), *_HAND_ON)),
    Recipe(
        "build, named blocks dropped from the student",
        "build",
        (Step("synthesize"), Step("distill"), Step("drop"), *_HAND_ON),
    ),
    Recipe(
        "build, budget search over teacher and student",
        "build",
        (Step("synthesize"), Step("distill"), Step("search"), *_HAND_ON),
    ),
    # chosen by the planner, never by a flag, when the budget buys a student too few KD steps (recipes/deliver.py)
    Recipe(
        COMPRESS_TEACHER,
        "build",
        (Step("synthesize"), Step("drop"), *_HAND_ON),
        default_reduction=0.3,  # the Jetson targets' own budget: the cut a build without one aims at
    ),
    Recipe("drop", "drop", (Step("synthesize"), Step("drop"), *_HAND_ON)),
    Recipe("drop, few-shot on real images", "drop", (Step("drop"), *_HAND_ON)),
    Recipe("search", "search", (Step("synthesize"), Step("search"), *_HAND_ON)),
    Recipe("quantize", "quantize", (Step("synthesize"), *_HAND_ON)),
    Recipe("quantize, calibrated on real images", "quantize", _HAND_ON),
)
RECIPES: dict[str, Recipe] = {recipe.name: recipe for recipe in _RECIPES}
COMMANDS = ("build", "drop", "search", "quantize")


def precision(options: BuildOptions, target: Target) -> str:
    return precision_setting(options, target).value


def choose_recipe(options: BuildOptions, target: Target | None = None) -> Recipe:
    """The one place a recipe is chosen: from the command (`options.recipe`) and, within it, the settings that
    make a variant. A build names blocks to drop from its student (--drop-blocks), or searches under a latency
    budget from its flags or, when the command is `build` itself (`auto_search`), from the target file."""
    command = options.recipe
    if command == "build":
        if options.drop_blocks is not None:
            return RECIPES["build, named blocks dropped from the student"]
        flags = options.latency_reduction is not None or options.latency_ms is not None
        from_target = (
            options.auto_search
            and target is not None
            and (target.latency_budget_ms is not None or target.latency_reduction is not None)
        )
        return RECIPES["build, budget search over teacher and student" if flags or from_target else "build"]
    if command == "drop":
        return RECIPES["drop, few-shot on real images" if options.images is not None else "drop"]
    if command == "search":
        return RECIPES["search"]
    if command == "quantize":
        return RECIPES["quantize, calibrated on real images" if options.calib == "real" else "quantize"]
    raise ValueError(f"unknown command {command!r} (one of {', '.join(COMMANDS)})")


def recipe_steps(recipe: Recipe, until: str) -> tuple[Step, ...]:
    """The recipe's steps up to `until` (`pipeline synthesize` stops after synthesize, `pipeline distill` after
    distill)."""
    last = STAGE_ORDER.index(until)
    return tuple(step for step in recipe.steps if STAGE_ORDER.index(step.stage) <= last)


def handed_on_precision(recipe: Recipe, options: BuildOptions, target: Target, run=None) -> str:
    """The precision of the model the recipe hands on. A budget search decides it: once the search in `run` has
    finished, its choice; before that, and in every recipe without a search, the setting (flag < target < fp32).
    Read from the run, never written back into the options: the options stay what the user asked for."""
    if "search" in recipe.stages and run is not None:
        entry = run.entry("search")
        if entry and entry.get("status") == "done":
            return entry["metrics"]["precision"]
    return precision(options, target)


def applies(step: Step, recipe: Recipe, options: BuildOptions, target: Target, run=None) -> bool:
    if step.when == QUANTISED:
        return handed_on_precision(recipe, options, target, run) != "fp32"
    if step.when == TENSORRT:
        return target.runtime == "tensorrt"
    return True


def stages_to_run(recipe: Recipe, options: BuildOptions, until: str, target: Target, run=None) -> list[str]:
    """The recipe's stages up to `until` whose conditions hold for these settings, this target and, after a
    budget search in `run`, the precision it chose."""
    return [step.stage for step in recipe_steps(recipe, until) if applies(step, recipe, options, target, run)]


def model_to_drop(recipe: Recipe, teacher, student: str | None):
    """The model that will lose blocks: the teacher itself (a LoadedModel's module), or (when the recipe trains
    one) the student's architecture at the teacher's input, with random weights until distill has trained it."""
    if not recipe.trains_a_student:
        return teacher.model
    from pipeline.models import create_model

    channels, height, _ = teacher.input_shape
    return create_model(student, in_channels=channels, num_classes=teacher.num_classes, image_size=height)
