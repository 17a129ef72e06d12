"""Which stages a command runs: one explicit recipe per command (and per variant of `build`, `drop` and
`quantize`), its stages in order, each with the condition, if any, that decides it. Which recipe a build follows
is decided from its settings alone, before anything runs; `--plan` prints the recipe and its stages."""

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


_HAND_ON = (Step("export"), Step("quantize", QUANTISED), Step("engine", TENSORRT), Step("bench"))
RECIPES: dict[str, tuple[Step, ...]] = {
    "build": (Step("synthesize"), Step("distill"), *_HAND_ON),
    "build, named blocks dropped from the student": (Step("synthesize"), Step("distill"), Step("drop"), *_HAND_ON),
    "build, budget search over teacher and student": (
        Step("synthesize"),
        Step("distill"),
        Step("search"),
        *_HAND_ON,
    ),
    "drop": (Step("synthesize"), Step("drop"), *_HAND_ON),
    "drop, few-shot on real images": (Step("drop"), *_HAND_ON),
    "search": (Step("synthesize"), Step("search"), *_HAND_ON),
    "quantize": (Step("synthesize"), *_HAND_ON),
    "quantize, calibrated on real images": _HAND_ON,
}


def precision(options: BuildOptions, target: Target) -> str:
    return precision_setting(options, target).value


def recipe_name(options: BuildOptions) -> str:
    """The recipe a command's settings ask for (the CLI's commands set these fields; `build` alone sets none)."""
    if options.search == "teacher":
        return "search"
    if options.search == "build":
        return "build, budget search over teacher and student"
    if options.drop_from == "teacher":
        return "drop, few-shot on real images" if options.images is not None else "drop"
    if options.drop_from == "student":
        return "build, named blocks dropped from the student"
    if options.quantize_from == "teacher":
        return "quantize, calibrated on real images" if options.calib == "real" else "quantize"
    return "build"


def recipe_steps(options: BuildOptions, until: str) -> tuple[Step, ...]:
    """The recipe's steps up to `until` (`pipeline synthesize` stops after synthesize, `pipeline distill` after
    distill)."""
    last = STAGE_ORDER.index(until)
    return tuple(step for step in RECIPES[recipe_name(options)] if STAGE_ORDER.index(step.stage) <= last)


def handed_on_precision(options: BuildOptions, target: Target, run=None) -> str:
    """The precision of the model the recipe hands on. A budget search decides it: once the search in `run` has
    finished, its choice; before that, and in every recipe without a search, the setting (flag < target < fp32).
    Read from the run, never written back into the options: the options stay what the user asked for."""
    if options.search and run is not None:
        entry = run.entry("search")
        if entry and entry.get("status") == "done":
            return entry["metrics"]["precision"]
    return precision(options, target)


def applies(step: Step, options: BuildOptions, target: Target, run=None) -> bool:
    if step.when == QUANTISED:
        return handed_on_precision(options, target, run) != "fp32"
    if step.when == TENSORRT:
        return target.runtime == "tensorrt"
    return True


def stages_to_run(options: BuildOptions, until: str, target: Target, run=None) -> list[str]:
    """The recipe's stages up to `until` whose conditions hold for these settings, this target and, after a
    budget search in `run`, the precision it chose."""
    return [step.stage for step in recipe_steps(options, until) if applies(step, options, target, run)]
