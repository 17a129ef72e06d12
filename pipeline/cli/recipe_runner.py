"""Running a recipe from a command's parameters: only the options the user gave reach `BuildOptions`; the
result is printed as the summary table, the plan (`--plan`) or JSON (`--json`)."""

import json
import shlex
import sys
from typing import Optional

from rich.table import Table

from pipeline.cli.app import input_shape_option, run_action, stdout


def _synth_options(pairs: Optional[list[str]]) -> dict:
    from pipeline.errors import PipelineError

    parsed = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PipelineError(f"--synth-option expects KEY=VALUE, got {pair!r}")
        parsed[key.strip().replace("-", "_")] = _literal(value.strip())
    return parsed


def _literal(text: str):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _block_names(text: Optional[str]) -> Optional[tuple[str, ...]]:
    if text is None:
        return None
    return tuple(name.strip() for name in text.split(",") if name.strip())


def run_recipe(until: str, values: dict, **recipe) -> None:
    """Run (or with --plan, only resolve) the recipe up to `until` with the options the user gave."""
    values = {**values, **recipe}
    debug, quiet, as_json, plan = (
        values.pop("debug"),
        values.pop("quiet"),
        values.pop("json_output"),
        values.pop("plan"),
    )
    given = {name: value for name, value in values.items() if value is not None}  # None = not given: the default

    def action():
        from pipeline.preprocess import preprocess_choice
        from pipeline.recipes.build import plan_build, run_build
        from pipeline.recipes.options import BuildOptions

        parsed = {
            "input_shape": input_shape_option(given.pop("input_shape", None)),
            "preprocess": preprocess_choice(
                *(given.pop(name, None) for name in ("mean", "std", "channel_order", "pixel_scale", "preprocess"))
            ),
            "drop_blocks": _block_names(given.pop("drop_blocks", None)),
            "synth_options": _synth_options(given.pop("synth_option", None)),
        }
        options = BuildOptions(
            **given,
            **{name: value for name, value in parsed.items() if value is not None},
            command=" ".join(["pipeline", *map(shlex.quote, sys.argv[1:])]),
        )
        return plan_build(options, until=until) if plan else run_build(options, until=until)

    from pipeline.distributed import env_rank

    if env_rank() != 0:  # torchrun: one rank reports
        quiet = True
    result = run_action(debug, quiet or plan, action, out_hint=str(given["out"]) if "out" in given else None)
    if env_rank() != 0:
        return
    if as_json:
        stdout.print_json(json.dumps(result, default=str))
    elif plan:
        _print_plan(result)
    else:
        _print_summary(result)


def _print_plan(plan: dict) -> None:
    stdout.print(
        f"plan for {plan['run_folder']} (recipe: {plan['recipe']}): teacher {plan['teacher']} ({plan['arch']}), "
        f"target {plan['target']} "
        f"({plan['runtime']}), budget {plan['budget']}, precision {plan['precision']}, synthesizer "
        f"{plan['synthesizer']}, accuracy on {plan['eval'] or 'nothing'}",
        highlight=False,
    )
    pre = plan["preprocess"]
    stdout.print(
        f"preprocessing ({pre['source']}): {pre['channel_order']} {pre['channels']}x{pre['height']}x{pre['width']}, "
        f"pixels / {pre['pixel_scale']:g}, mean {pre['mean']}, std {pre['std']}",
        highlight=False,
    )
    layered = ", ".join(f"{name} {s['value']} ({s['from']})" for name, s in plan["settings"].items())
    stdout.print(f"settings: {layered}", highlight=False)
    table = Table(title="stages, in order (nothing was run)")
    for column in ("stage", "inputs", "settings", "in the run folder"):
        table.add_column(column)
    for stage in plan["stages"]:
        inputs = "\n".join(f"{name}: {source}" for name, source in stage["inputs"].items())
        settings = ", ".join(
            f"{k}={v}" for k, v in stage["config"].items() if not isinstance(v, dict) and v is not None
        ) or (f"runs when {stage['when']}" if stage.get("when") else "")
        table.add_row(stage["stage"], inputs, settings, "finished" if stage["finished"] else "to run")
    stdout.print(table)
    from pipeline.recipes.plan_report import describe_plan

    notes = [f"plan: {plan[key]}" for key in ("recipe_note", "budget_note") if plan.get(key)]
    for line in notes + describe_plan(plan["cost_plan"]):
        stdout.print(line, highlight=False, markup=False)


def _print_summary(summary: dict) -> None:
    table = Table(title=f"edge-pipeline — {summary['run_folder']}")
    for column in ("model", "arch", "precision", "params", "ONNX MB", "top-1", "latency median ms", "p90 ms", "CV"):
        table.add_column(column, justify="right" if column not in ("model", "arch", "precision") else "left")
    for row in summary["rows"]:
        accuracy = f"{row['accuracy'] * 100:.2f} %" if row.get("accuracy") is not None else "—"
        table.add_row(
            row["model"],
            str(row["arch"]),
            row.get("precision", "fp32"),
            f"{row['parameters']:,}",
            f"{row['onnx_bytes'] / 1e6:.3f}",
            accuracy,
            _fmt(row.get("latency_median_ms")),
            _fmt(row.get("latency_p90_ms")),
            _fmt(row.get("latency_cv"), 2),
        )
    stdout.print(table)
    for row in summary["rows"]:
        if row.get("dropped_blocks"):
            stdout.print(f"{row['model']}: dropped blocks {', '.join(row['dropped_blocks'])}", highlight=False)
    for note in summary.get("notes", []):
        stdout.print(f"note: {note}", highlight=False, markup=False)
    stdout.print(f"manifest: {summary['manifest']}")


def _fmt(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"
