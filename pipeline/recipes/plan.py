"""Which stages a build runs: decided from the settings and the target alone, before anything runs."""

from pipeline.recipes.options import STAGE_ORDER, BuildOptions
from pipeline.recipes.resolve import precision_setting
from pipeline.targets import Target


def precision(options: BuildOptions, target: Target) -> str:
    return precision_setting(options, target).value


def stages_to_run(options: BuildOptions, until: str, target: Target) -> list[str]:
    """The stages up to `until` that this build needs: `pipeline drop` skips distill (and synthesize when real
    images are given); a build without a latency budget skips drop; an fp32 build skips quantize;
    `pipeline quantize` skips distill and drop (and synthesize when it calibrates on real images)."""
    wanted = list(STAGE_ORDER[: STAGE_ORDER.index(until) + 1])
    skip = set()
    if options.search is None:
        skip.add("search")
    elif options.search == "teacher":
        skip.add("distill")
    if options.drop_from is None:
        skip.add("drop")
    elif options.drop_from == "teacher":
        skip.add("distill")
        if options.images is not None:
            skip.add("synthesize")
    if precision(options, target) == "fp32":
        skip.add("quantize")
    if target.runtime != "tensorrt":
        skip.add("engine")
    if options.quantize_from == "teacher" and options.drop_from is None:
        skip.update({"distill", "drop"})
        if options.calib == "real":
            skip.add("synthesize")
    return [name for name in wanted if name not in skip]
