"""The commands that build a model, each a recipe of stages in one run folder (`pipeline.recipes`): build,
search, drop, quantize, synthesize, distill. They share their options (`options.py`) and pass on only what
the user gave; every default is `BuildOptions`'."""

import json
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from pipeline.cli.app import app, input_shape_option, run_action, stdout
from pipeline.cli.options import (
    ARCH, AUGMENT, BINARY_COVERAGE, BINARY_ITERATIONS, BUDGET, BUILD_COMMANDS, CALIB, CALIB_IMAGES, CALIB_IMAGES_DIR,
    CALIB_METHOD, COMPRESSION_PANEL, DEBUG, DEVICE, DROP_BLOCKS, DROP_ITERATIONS, DROP_LR, EMA, EVAL, FEATURE_WEIGHT,
    FORCE, HOST, IMAGES, INPUT_SHAPE, JSON, KD_STEPS, LATENCY_MS, LATENCY_REDUCTION, MAX_ACCURACY_DROP, MIX_IMAGES,
    MIX_PER_CLASS, NUM_CLASSES, OUT, PER_CLASS, PLAN, PRECISION, QUIET, SEED, STEPS, STUDENT, SYNTH_OPTION,
    SYNTH_PRESET, SYNTHESIZER, TARGET, TEACHER, TEMPERATURE, TRUST,
)


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


def _build(until: str, values: dict, **recipe) -> None:
    """Run (or with --plan, only resolve) the recipe up to `until` with the options the user gave."""
    values = {**values, **recipe}
    debug, quiet, as_json, plan = values.pop("debug"), values.pop("quiet"), values.pop("json_output"), values.pop("plan")
    given = {name: value for name, value in values.items() if value is not None}  # None = not given: the default

    def action():
        from pipeline.recipes.build import plan_build, run_build
        from pipeline.recipes.options import BuildOptions

        parsed = {"input_shape": input_shape_option(given.pop("input_shape", None)),
                  "drop_blocks": _block_names(given.pop("drop_blocks", None)),
                  "synth_options": _synth_options(given.pop("synth_option", None))}
        options = BuildOptions(**given, **{name: value for name, value in parsed.items() if value is not None},
                               command=" ".join(["pipeline", *map(shlex.quote, sys.argv[1:])]))
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
    stdout.print(f"plan for {plan['run_folder']}: teacher {plan['teacher']} ({plan['arch']}), target {plan['target']} "
                 f"({plan['runtime']}), budget {plan['budget']}, precision {plan['precision']}, synthesizer "
                 f"{plan['synthesizer']}, accuracy on {plan['eval'] or 'nothing'}", highlight=False)
    table = Table(title="stages, in order (nothing was run)")
    for column in ("stage", "inputs", "settings", "in the run folder"):
        table.add_column(column)
    for stage in plan["stages"]:
        inputs = "\n".join(f"{name}: {source}" for name, source in stage["inputs"].items())
        settings = ", ".join(f"{k}={v}" for k, v in stage["config"].items() if not isinstance(v, dict) and v is not None)
        table.add_row(stage["stage"], inputs, settings, "finished" if stage["finished"] else "to run")
    stdout.print(table)


def _print_summary(summary: dict) -> None:
    table = Table(title=f"edge-pipeline — {summary['run_folder']}")
    for column in ("model", "arch", "precision", "params", "ONNX MB", "top-1", "latency median ms", "p90 ms", "CV"):
        table.add_column(column, justify="right" if column not in ("model", "arch", "precision") else "left")
    for row in summary["rows"]:
        accuracy = f"{row['accuracy'] * 100:.2f} %" if row.get("accuracy") is not None else "—"
        table.add_row(row["model"], str(row["arch"]), row.get("precision", "fp32"), f"{row['parameters']:,}",
                      f"{row['onnx_bytes'] / 1e6:.3f}", accuracy, _fmt(row.get("latency_median_ms")),
                      _fmt(row.get("latency_p90_ms")), _fmt(row.get("latency_cv"), 2))
    stdout.print(table)
    for row in summary["rows"]:
        if row.get("dropped_blocks"):
            stdout.print(f"{row['model']}: dropped blocks {', '.join(row['dropped_blocks'])}", highlight=False)
    for note in summary.get("notes", []):
        stdout.print(f"note: {note}", highlight=False, markup=False)
    stdout.print(f"manifest: {summary['manifest']}")


def _fmt(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


@app.command(rich_help_panel=BUILD_COMMANDS)
def build(teacher: Optional[str] = TEACHER, arch: Optional[str] = ARCH, trust_checkpoint: bool = TRUST,
          input_shape: Optional[str] = INPUT_SHAPE, num_classes: Optional[int] = NUM_CLASSES,
          budget: Optional[str] = BUDGET, steps: Optional[int] = STEPS, seed: Optional[int] = SEED,
          student: Optional[str] = STUDENT, synthesizer: Optional[str] = SYNTHESIZER,
          synth_preset: Optional[str] = SYNTH_PRESET, synth_option: Optional[list[str]] = SYNTH_OPTION,
          device: Optional[str] = DEVICE, temperature: Optional[float] = TEMPERATURE, ema: Optional[float] = EMA,
          feature_weight: Optional[float] = FEATURE_WEIGHT, kd_steps: Optional[int] = KD_STEPS,
          augment: Optional[bool] = AUGMENT, mix_images: Optional[str] = MIX_IMAGES,
          mix_per_class: Optional[int] = MIX_PER_CLASS, latency_reduction: Optional[float] = LATENCY_REDUCTION,
          latency_ms: Optional[float] = LATENCY_MS, drop_blocks: Optional[str] = DROP_BLOCKS,
          precision: Optional[str] = PRECISION, calib: Optional[str] = CALIB, calib_method: Optional[str] = CALIB_METHOD,
          max_accuracy_drop: Optional[float] = MAX_ACCURACY_DROP, target: Optional[str] = TARGET,
          host: Optional[str] = HOST, eval: Optional[str] = EVAL, out: Optional[Path] = OUT, force: bool = FORCE,
          plan: bool = PLAN, json_output: bool = JSON, debug: bool = DEBUG, quiet: bool = QUIET):
    """Run every stage into one run folder: synthesize, distill, (drop or search), export, (quantize),
    (engine), bench.

    With --latency-reduction or --latency-ms (or a target file with a latency budget, like the Jetsons) the build
    searches for the most accurate model that meets it, measured on the target: blocks dropped from the teacher or
    the distilled student, times precision (see `pipeline search`); --drop-blocks names the blocks instead. With
    --precision int8, fp16 or binary (or a target whose precision is not fp32) the exported student is quantised
    (see `pipeline quantize`). TensorRT targets get an engine (see `pipeline engine`). --steps N and --seed make the
    whole build reproducible byte for byte (with --drop-blocks: no search).

    Data-free: the student never sees a labelled image (unless you choose `--synthesizer images`); accuracy is
    measured afterwards on the exported ONNX model when --eval (or the embedded teacher's dataset) is available.
    Data-parallel: `torchrun --nproc-per-node 2 -m pipeline build ...` (gloo on CPU, NCCL on GPUs).

    Example, on a laptop with no Jetson at hand (latency by a labelled proxy, the engine command left for the
    device): `pipeline build --teacher r34.pt --target jetson`

    Example, measured on the device: `pipeline build --teacher r34.pt --target jetson-orin-nano --host me@jetson.local`
    """
    values = dict(locals())
    recipe = {"drop_from": "student"} if drop_blocks is not None else \
        {"search": "build"} if latency_reduction is not None or latency_ms is not None else {}
    _build("bench", values, auto_drop=True, **recipe)


@app.command(rich_help_panel=BUILD_COMMANDS)
def search(teacher: Optional[str] = TEACHER, arch: Optional[str] = ARCH, trust_checkpoint: bool = TRUST,
           input_shape: Optional[str] = INPUT_SHAPE, num_classes: Optional[int] = NUM_CLASSES,
           budget: Optional[str] = BUDGET, steps: Optional[int] = STEPS, seed: Optional[int] = SEED,
           synthesizer: Optional[str] = SYNTHESIZER, synth_preset: Optional[str] = SYNTH_PRESET,
           synth_option: Optional[list[str]] = SYNTH_OPTION, device: Optional[str] = DEVICE,
           latency_reduction: Optional[float] = LATENCY_REDUCTION, latency_ms: Optional[float] = LATENCY_MS,
           precision: Optional[str] = typer.Option(None, "--precision", rich_help_panel=COMPRESSION_PANEL, help=(
               "Search only this precision (default: every precision the target allows, of fp32, fp16, int8).")),
           drop_iterations: Optional[int] = DROP_ITERATIONS, drop_lr: Optional[float] = DROP_LR,
           calib_images: Optional[int] = CALIB_IMAGES, target: Optional[str] = TARGET, host: Optional[str] = HOST,
           eval: Optional[str] = EVAL, out: Optional[Path] = OUT, force: bool = FORCE, plan: bool = PLAN,
           json_output: bool = JSON, debug: bool = DEBUG, quiet: bool = QUIET):
    """The most accurate model from the teacher that meets a latency budget, found by measuring.

    Searches blocks dropped (prefixes of the PRACTISE order) times precision (fp32, fp16, int8, as the target
    allows). Cheap first: the block latency table, the drop order and each precision's speed-up are measured once
    and predict every candidate's latency; only those next to the budget line are fine-tuned, quantised and timed
    (interleaved with the teacher, on the target's runner). Accuracy is estimated without labels on held-back
    synthetic images; --eval only reports real accuracy beside it. Everything measured is cached in `OUT/cache/`,
    so searching the same --out with another budget reuses it. Writes `OUT/search/pareto.csv`, `pareto.png` and
    `choice.md` (why this point), then exports, quantises and benchmarks the choice as `build` does.
    `pipeline build --latency-ms X` runs the same search with the distilled student as a second base.

    Example: `pipeline search --latency-reduction 0.3 --out runs/r20-search`
    """
    _build("bench", dict(locals()), search="teacher")


@app.command(rich_help_panel=BUILD_COMMANDS)
def drop(teacher: Optional[str] = TEACHER, arch: Optional[str] = ARCH, trust_checkpoint: bool = TRUST,
         input_shape: Optional[str] = INPUT_SHAPE, num_classes: Optional[int] = NUM_CLASSES,
         budget: Optional[str] = BUDGET, steps: Optional[int] = STEPS, seed: Optional[int] = SEED,
         synthesizer: Optional[str] = SYNTHESIZER, synth_preset: Optional[str] = SYNTH_PRESET,
         synth_option: Optional[list[str]] = SYNTH_OPTION, device: Optional[str] = DEVICE,
         latency_reduction: Optional[float] = LATENCY_REDUCTION, latency_ms: Optional[float] = LATENCY_MS,
         drop_blocks: Optional[str] = DROP_BLOCKS, images: Optional[str] = IMAGES, per_class: Optional[int] = PER_CLASS,
         drop_iterations: Optional[int] = DROP_ITERATIONS, drop_lr: Optional[float] = DROP_LR,
         target: Optional[str] = TARGET, host: Optional[str] = HOST, eval: Optional[str] = EVAL,
         out: Optional[Path] = OUT, force: bool = FORCE, plan: bool = PLAN, json_output: bool = JSON,
         debug: bool = DEBUG, quiet: bool = QUIET):
    """Drop whole residual blocks from the teacher where they cost the most latency on the target (PRACTISE).

    Measures each block's latency saving on the target's runtime (cached in `OUT/cache/`), scores blocks by
    recoverability per saving with identity-initialised 1x1 adapters, drops greedily until the budget is met
    (checked by measuring), fine-tunes on the synthetic transfer set (data-free; `synthesize` runs first) or on
    --images (few-shot), folds the adapters into the convolutions, then exports and benchmarks both models.

    Example: `pipeline drop --latency-reduction 0.3 --out runs/r20-drop`
    """
    _build("bench", dict(locals()), drop_from="teacher")


@app.command(rich_help_panel=BUILD_COMMANDS)
def quantize(teacher: Optional[str] = TEACHER, arch: Optional[str] = ARCH, trust_checkpoint: bool = TRUST,
             input_shape: Optional[str] = INPUT_SHAPE, num_classes: Optional[int] = NUM_CLASSES,
             budget: Optional[str] = BUDGET, steps: Optional[int] = STEPS, seed: Optional[int] = SEED,
             synthesizer: Optional[str] = SYNTHESIZER, synth_preset: Optional[str] = SYNTH_PRESET,
             synth_option: Optional[list[str]] = SYNTH_OPTION, device: Optional[str] = DEVICE,
             precision: str = typer.Option("int8", "--precision", rich_help_panel=COMPRESSION_PANEL, help=(
                 "int8, fp16 or binary (weights alpha times sign(W)).")),
             calib: Optional[str] = CALIB, calib_method: Optional[str] = CALIB_METHOD,
             images: Optional[str] = CALIB_IMAGES_DIR, calib_images: Optional[int] = CALIB_IMAGES,
             max_accuracy_drop: Optional[float] = MAX_ACCURACY_DROP,
             binary_iterations: Optional[int] = BINARY_ITERATIONS, binary_coverage: Optional[float] = BINARY_COVERAGE,
             target: Optional[str] = TARGET, host: Optional[str] = HOST, eval: Optional[str] = EVAL,
             out: Optional[Path] = OUT, force: bool = FORCE, plan: bool = PLAN, json_output: bool = JSON,
             debug: bool = DEBUG, quiet: bool = QUIET):
    """Quantise the teacher for the target, data-free: INT8, FP16 or binary weights, verified against fp32.

    INT8 (onnxruntime quantize_static, per-channel symmetric weights): for TensorRT targets symmetric S8S8 Q/DQ that
    TensorRT 10 and 11 parse and fuse; for the cpu target the format measured fastest on this CPU (its INT8
    instruction set is recorded). Calibrated on the synthetic transfer set (`synthesize` runs first) unless
    `--calib real --images DIR`. If the label-free estimate of the accuracy drop exceeds --max-accuracy-drop, the
    most sensitive layers stay in float. FP16: float16 weights and compute, float32 inputs and outputs.

    Binary: BWN weights trained by data-free KD, the first and last layers kept, and the layers that lose most per
    weight kept within 1 - --binary-coverage of the weights; exported as exact plus-or-minus alpha INT8 weights and
    a packed 1-bit checkpoint (`OUT/quantize/binary_weights.pt`). Every result is compared with the fp32 model in
    onnxruntime (output error, accuracy with --eval) and timed.

    Example: `pipeline quantize --precision int8 --calib-method percentile --out runs/r20-int8`
    """
    _build("bench", dict(locals()), quantize_from="teacher")


@app.command(rich_help_panel=BUILD_COMMANDS)
def synthesize(teacher: Optional[str] = TEACHER, arch: Optional[str] = ARCH, trust_checkpoint: bool = TRUST,
               input_shape: Optional[str] = INPUT_SHAPE, num_classes: Optional[int] = NUM_CLASSES,
               budget: Optional[str] = BUDGET, steps: Optional[int] = STEPS, seed: Optional[int] = SEED,
               synthesizer: Optional[str] = SYNTHESIZER, synth_preset: Optional[str] = SYNTH_PRESET,
               synth_option: Optional[list[str]] = SYNTH_OPTION, device: Optional[str] = DEVICE,
               mix_images: Optional[str] = MIX_IMAGES, mix_per_class: Optional[int] = MIX_PER_CLASS,
               target: Optional[str] = TARGET, out: Optional[Path] = OUT, force: bool = FORCE, plan: bool = PLAN,
               json_output: bool = JSON, debug: bool = DEBUG, quiet: bool = QUIET):
    """Make a transfer set from the frozen teacher: `OUT/synthesize/transfer_set.pt` (uint8 images and the
    teacher's logits), `synthesizer.pt` (the generator state, continued by `distill`) and `samples.png`."""
    _build("synthesize", dict(locals()), eval="none")


@app.command(rich_help_panel=BUILD_COMMANDS)
def distill(teacher: Optional[str] = TEACHER, arch: Optional[str] = ARCH, trust_checkpoint: bool = TRUST,
            input_shape: Optional[str] = INPUT_SHAPE, num_classes: Optional[int] = NUM_CLASSES,
            budget: Optional[str] = BUDGET, steps: Optional[int] = STEPS, seed: Optional[int] = SEED,
            student: Optional[str] = STUDENT, synthesizer: Optional[str] = SYNTHESIZER,
            synth_preset: Optional[str] = SYNTH_PRESET, synth_option: Optional[list[str]] = SYNTH_OPTION,
            device: Optional[str] = DEVICE, temperature: Optional[float] = TEMPERATURE, ema: Optional[float] = EMA,
            feature_weight: Optional[float] = FEATURE_WEIGHT, kd_steps: Optional[int] = KD_STEPS,
            augment: Optional[bool] = AUGMENT, mix_images: Optional[str] = MIX_IMAGES,
            mix_per_class: Optional[int] = MIX_PER_CLASS, target: Optional[str] = TARGET, eval: Optional[str] = EVAL,
            out: Optional[Path] = OUT, force: bool = FORCE, plan: bool = PLAN, json_output: bool = JSON,
            debug: bool = DEBUG, quiet: bool = QUIET):
    """Distil the student on the transfer set while the synthesizer keeps producing (runs `synthesize` first if
    needed). --eval only draws an accuracy-versus-time curve; it never picks a checkpoint.
    Data-parallel: `torchrun --nproc-per-node 2 -m pipeline distill ...`."""
    _build("distill", dict(locals()))
