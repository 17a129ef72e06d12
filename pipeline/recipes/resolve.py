"""The build settings that more than one layer can give, each resolved in one place with
`pipeline.layered.resolve` (defaults < budget < target file < flags); the stage factories and the checks before
a run read them through these functions, and `--plan` prints each with where it came from."""

from pipeline.layered import Resolved, resolve
from pipeline.recipes.options import BuildOptions


def precision_setting(options: BuildOptions, target) -> Resolved:
    return resolve("fp32", (f"target {target.name}", target.precision), ("flag", options.precision))


def latency_budget_setting(options: BuildOptions, target) -> Resolved:
    """--latency-reduction / --latency-ms over the target's latency_reduction / latency_budget_ms; a budget is
    one pair, taken whole from one layer."""

    def pair(reduction, ms):
        return None if reduction is None and ms is None else {"reduction": reduction, "ms": ms}

    return resolve(
        None,
        (f"target {target.name}", pair(target.latency_reduction, target.latency_budget_ms)),
        ("flag", pair(options.latency_reduction, options.latency_ms)),
    )


def build_settings(options: BuildOptions, budget, target) -> dict[str, Resolved]:
    from pipeline.kd import FeatureKDSettings  # loads torch: not for `--help`

    from_budget = f"budget {budget.name}"
    return {
        "precision": precision_setting(options, target),
        "latency_budget": latency_budget_setting(options, target),
        "drop_iterations": resolve(
            FeatureKDSettings.iterations, (from_budget, budget.drop_iterations), ("flag", options.drop_iterations)
        ),
        "drop_lr": resolve(FeatureKDSettings.lr, ("flag", options.drop_lr)),
        "binary_iterations": resolve(
            FeatureKDSettings.iterations, (from_budget, budget.binary_iterations), ("flag", options.binary_iterations)
        ),
    }
