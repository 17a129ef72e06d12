"""The commands that build a model, each a recipe of stages in one run folder (`pipeline.recipes`): build,
search, drop, quantize, synthesize, distill. They share their options (`options.py`) and pass on only what
the user gave; every default is `BuildOptions`'."""

from pathlib import Path
from typing import Optional

import typer

from pipeline.cli.app import app
from pipeline.cli.options import (
    ARCH,
    AUGMENT,
    BINARY_COVERAGE,
    BINARY_ITERATIONS,
    BUDGET,
    BUILD_COMMANDS,
    CALIB,
    CALIB_IMAGES,
    CALIB_IMAGES_DIR,
    CALIB_METHOD,
    CHANNEL_ORDER,
    CLASS_BALANCE,
    COMPRESSION_PANEL,
    DEBUG,
    DEVICE,
    DROP_BLOCKS,
    DROP_ITERATIONS,
    DROP_LR,
    EMA,
    EVAL,
    FEATURE_WEIGHT,
    FORCE,
    HOST,
    IMAGES,
    INPUT_SHAPE,
    JSON,
    KD_STEPS,
    LATENCY_MS,
    LATENCY_REDUCTION,
    MAX_ACCURACY_DROP,
    MAX_MEMORY,
    MEAN,
    MIX_IMAGES,
    MIX_PER_CLASS,
    NUM_CLASSES,
    OUT,
    PER_CLASS,
    PIXEL_SCALE,
    PLAN,
    PRECISION,
    PREPROCESS_FILE,
    QUIET,
    SEED,
    STD,
    STEPS,
    STUDENT,
    SYNTH_OPTION,
    SYNTH_PRESET,
    SYNTHESIZER,
    TARGET,
    TEACHER,
    TEMPERATURE,
    TRUST,
)
from pipeline.cli.recipe_runner import run_recipe


@app.command(rich_help_panel=BUILD_COMMANDS)
def build(
    teacher: Optional[str] = TEACHER,
    arch: Optional[str] = ARCH,
    trust_checkpoint: bool = TRUST,
    input_shape: Optional[str] = INPUT_SHAPE,
    mean: Optional[str] = MEAN,
    std: Optional[str] = STD,
    channel_order: Optional[str] = CHANNEL_ORDER,
    pixel_scale: Optional[float] = PIXEL_SCALE,
    preprocess: Optional[str] = PREPROCESS_FILE,
    num_classes: Optional[int] = NUM_CLASSES,
    budget: Optional[str] = BUDGET,
    steps: Optional[int] = STEPS,
    seed: Optional[int] = SEED,
    student: Optional[str] = STUDENT,
    synthesizer: Optional[str] = SYNTHESIZER,
    synth_preset: Optional[str] = SYNTH_PRESET,
    synth_option: Optional[list[str]] = SYNTH_OPTION,
    device: Optional[str] = DEVICE,
    max_memory_gib: Optional[float] = MAX_MEMORY,
    temperature: Optional[float] = TEMPERATURE,
    ema: Optional[float] = EMA,
    feature_weight: Optional[float] = FEATURE_WEIGHT,
    kd_steps: Optional[int] = KD_STEPS,
    class_balance: Optional[float] = CLASS_BALANCE,
    augment: Optional[bool] = AUGMENT,
    mix_images: Optional[str] = MIX_IMAGES,
    mix_per_class: Optional[int] = MIX_PER_CLASS,
    latency_reduction: Optional[float] = LATENCY_REDUCTION,
    latency_ms: Optional[float] = LATENCY_MS,
    drop_blocks: Optional[str] = DROP_BLOCKS,
    precision: Optional[str] = PRECISION,
    calib: Optional[str] = CALIB,
    calib_method: Optional[str] = CALIB_METHOD,
    max_accuracy_drop: Optional[float] = MAX_ACCURACY_DROP,
    target: Optional[str] = TARGET,
    host: Optional[str] = HOST,
    eval: Optional[str] = EVAL,
    out: Optional[Path] = OUT,
    force: bool = FORCE,
    plan: bool = PLAN,
    json_output: bool = JSON,
    debug: bool = DEBUG,
    quiet: bool = QUIET,
):
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
    run_recipe("bench", dict(locals()), auto_search=True)  # the variant: recipes/plan.py::choose_recipe


@app.command(rich_help_panel=BUILD_COMMANDS)
def search(
    teacher: Optional[str] = TEACHER,
    arch: Optional[str] = ARCH,
    trust_checkpoint: bool = TRUST,
    input_shape: Optional[str] = INPUT_SHAPE,
    mean: Optional[str] = MEAN,
    std: Optional[str] = STD,
    channel_order: Optional[str] = CHANNEL_ORDER,
    pixel_scale: Optional[float] = PIXEL_SCALE,
    preprocess: Optional[str] = PREPROCESS_FILE,
    num_classes: Optional[int] = NUM_CLASSES,
    budget: Optional[str] = BUDGET,
    steps: Optional[int] = STEPS,
    seed: Optional[int] = SEED,
    synthesizer: Optional[str] = SYNTHESIZER,
    synth_preset: Optional[str] = SYNTH_PRESET,
    synth_option: Optional[list[str]] = SYNTH_OPTION,
    device: Optional[str] = DEVICE,
    max_memory_gib: Optional[float] = MAX_MEMORY,
    latency_reduction: Optional[float] = LATENCY_REDUCTION,
    latency_ms: Optional[float] = LATENCY_MS,
    precision: Optional[str] = typer.Option(
        None,
        "--precision",
        rich_help_panel=COMPRESSION_PANEL,
        help=("Search only this precision (default: every precision the target allows, of fp32, fp16, int8)."),
    ),
    drop_iterations: Optional[int] = DROP_ITERATIONS,
    drop_lr: Optional[float] = DROP_LR,
    calib_images: Optional[int] = CALIB_IMAGES,
    target: Optional[str] = TARGET,
    host: Optional[str] = HOST,
    eval: Optional[str] = EVAL,
    out: Optional[Path] = OUT,
    force: bool = FORCE,
    plan: bool = PLAN,
    json_output: bool = JSON,
    debug: bool = DEBUG,
    quiet: bool = QUIET,
):
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
    run_recipe("bench", dict(locals()), recipe="search")


@app.command(rich_help_panel=BUILD_COMMANDS)
def drop(
    teacher: Optional[str] = TEACHER,
    arch: Optional[str] = ARCH,
    trust_checkpoint: bool = TRUST,
    input_shape: Optional[str] = INPUT_SHAPE,
    mean: Optional[str] = MEAN,
    std: Optional[str] = STD,
    channel_order: Optional[str] = CHANNEL_ORDER,
    pixel_scale: Optional[float] = PIXEL_SCALE,
    preprocess: Optional[str] = PREPROCESS_FILE,
    num_classes: Optional[int] = NUM_CLASSES,
    budget: Optional[str] = BUDGET,
    steps: Optional[int] = STEPS,
    seed: Optional[int] = SEED,
    synthesizer: Optional[str] = SYNTHESIZER,
    synth_preset: Optional[str] = SYNTH_PRESET,
    synth_option: Optional[list[str]] = SYNTH_OPTION,
    device: Optional[str] = DEVICE,
    max_memory_gib: Optional[float] = MAX_MEMORY,
    latency_reduction: Optional[float] = LATENCY_REDUCTION,
    latency_ms: Optional[float] = LATENCY_MS,
    drop_blocks: Optional[str] = DROP_BLOCKS,
    images: Optional[str] = IMAGES,
    per_class: Optional[int] = PER_CLASS,
    drop_iterations: Optional[int] = DROP_ITERATIONS,
    drop_lr: Optional[float] = DROP_LR,
    target: Optional[str] = TARGET,
    host: Optional[str] = HOST,
    eval: Optional[str] = EVAL,
    out: Optional[Path] = OUT,
    force: bool = FORCE,
    plan: bool = PLAN,
    json_output: bool = JSON,
    debug: bool = DEBUG,
    quiet: bool = QUIET,
):
    """Drop whole residual blocks from the teacher where they cost the most latency on the target (PRACTISE).

    Measures each block's latency saving on the target's runtime (cached in `OUT/cache/`), scores blocks by
    recoverability per saving with identity-initialised 1x1 adapters, drops greedily until the budget is met
    (checked by measuring), fine-tunes on the synthetic transfer set (data-free; `synthesize` runs first) or on
    --images (few-shot), folds the adapters into the convolutions, then exports and benchmarks both models.

    Example: `pipeline drop --latency-reduction 0.3 --out runs/r20-drop`
    """
    run_recipe("bench", dict(locals()), recipe="drop")


@app.command(rich_help_panel=BUILD_COMMANDS)
def quantize(
    teacher: Optional[str] = TEACHER,
    arch: Optional[str] = ARCH,
    trust_checkpoint: bool = TRUST,
    input_shape: Optional[str] = INPUT_SHAPE,
    mean: Optional[str] = MEAN,
    std: Optional[str] = STD,
    channel_order: Optional[str] = CHANNEL_ORDER,
    pixel_scale: Optional[float] = PIXEL_SCALE,
    preprocess: Optional[str] = PREPROCESS_FILE,
    num_classes: Optional[int] = NUM_CLASSES,
    budget: Optional[str] = BUDGET,
    steps: Optional[int] = STEPS,
    seed: Optional[int] = SEED,
    synthesizer: Optional[str] = SYNTHESIZER,
    synth_preset: Optional[str] = SYNTH_PRESET,
    synth_option: Optional[list[str]] = SYNTH_OPTION,
    device: Optional[str] = DEVICE,
    max_memory_gib: Optional[float] = MAX_MEMORY,
    precision: str = typer.Option(
        "int8",
        "--precision",
        rich_help_panel=COMPRESSION_PANEL,
        help=("int8, fp16 or binary (weights alpha times sign(W))."),
    ),
    calib: Optional[str] = CALIB,
    calib_method: Optional[str] = CALIB_METHOD,
    images: Optional[str] = CALIB_IMAGES_DIR,
    calib_images: Optional[int] = CALIB_IMAGES,
    max_accuracy_drop: Optional[float] = MAX_ACCURACY_DROP,
    binary_iterations: Optional[int] = BINARY_ITERATIONS,
    binary_coverage: Optional[float] = BINARY_COVERAGE,
    target: Optional[str] = TARGET,
    host: Optional[str] = HOST,
    eval: Optional[str] = EVAL,
    out: Optional[Path] = OUT,
    force: bool = FORCE,
    plan: bool = PLAN,
    json_output: bool = JSON,
    debug: bool = DEBUG,
    quiet: bool = QUIET,
):
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
    run_recipe("bench", dict(locals()), recipe="quantize")


@app.command(rich_help_panel=BUILD_COMMANDS)
def synthesize(
    teacher: Optional[str] = TEACHER,
    arch: Optional[str] = ARCH,
    trust_checkpoint: bool = TRUST,
    input_shape: Optional[str] = INPUT_SHAPE,
    mean: Optional[str] = MEAN,
    std: Optional[str] = STD,
    channel_order: Optional[str] = CHANNEL_ORDER,
    pixel_scale: Optional[float] = PIXEL_SCALE,
    preprocess: Optional[str] = PREPROCESS_FILE,
    num_classes: Optional[int] = NUM_CLASSES,
    budget: Optional[str] = BUDGET,
    steps: Optional[int] = STEPS,
    seed: Optional[int] = SEED,
    synthesizer: Optional[str] = SYNTHESIZER,
    synth_preset: Optional[str] = SYNTH_PRESET,
    synth_option: Optional[list[str]] = SYNTH_OPTION,
    device: Optional[str] = DEVICE,
    max_memory_gib: Optional[float] = MAX_MEMORY,
    mix_images: Optional[str] = MIX_IMAGES,
    mix_per_class: Optional[int] = MIX_PER_CLASS,
    target: Optional[str] = TARGET,
    out: Optional[Path] = OUT,
    force: bool = FORCE,
    plan: bool = PLAN,
    json_output: bool = JSON,
    debug: bool = DEBUG,
    quiet: bool = QUIET,
):
    """Make a transfer set from the frozen teacher: `OUT/synthesize/transfer_set.pt` (uint8 images and the
    teacher's logits), `synthesizer.pt` (the generator state, continued by `distill`) and `samples.png`."""
    run_recipe("synthesize", dict(locals()), eval="none")


@app.command(rich_help_panel=BUILD_COMMANDS)
def distill(
    teacher: Optional[str] = TEACHER,
    arch: Optional[str] = ARCH,
    trust_checkpoint: bool = TRUST,
    input_shape: Optional[str] = INPUT_SHAPE,
    mean: Optional[str] = MEAN,
    std: Optional[str] = STD,
    channel_order: Optional[str] = CHANNEL_ORDER,
    pixel_scale: Optional[float] = PIXEL_SCALE,
    preprocess: Optional[str] = PREPROCESS_FILE,
    num_classes: Optional[int] = NUM_CLASSES,
    budget: Optional[str] = BUDGET,
    steps: Optional[int] = STEPS,
    seed: Optional[int] = SEED,
    student: Optional[str] = STUDENT,
    synthesizer: Optional[str] = SYNTHESIZER,
    synth_preset: Optional[str] = SYNTH_PRESET,
    synth_option: Optional[list[str]] = SYNTH_OPTION,
    device: Optional[str] = DEVICE,
    max_memory_gib: Optional[float] = MAX_MEMORY,
    temperature: Optional[float] = TEMPERATURE,
    ema: Optional[float] = EMA,
    feature_weight: Optional[float] = FEATURE_WEIGHT,
    kd_steps: Optional[int] = KD_STEPS,
    class_balance: Optional[float] = CLASS_BALANCE,
    augment: Optional[bool] = AUGMENT,
    mix_images: Optional[str] = MIX_IMAGES,
    mix_per_class: Optional[int] = MIX_PER_CLASS,
    target: Optional[str] = TARGET,
    eval: Optional[str] = EVAL,
    out: Optional[Path] = OUT,
    force: bool = FORCE,
    plan: bool = PLAN,
    json_output: bool = JSON,
    debug: bool = DEBUG,
    quiet: bool = QUIET,
):
    """Distil the student on the transfer set while the synthesizer keeps producing (runs `synthesize` first if
    needed). --eval only draws an accuracy-versus-time curve; it never picks a checkpoint.
    Data-parallel: `torchrun --nproc-per-node 2 -m pipeline distill ...`."""
    run_recipe("distill", dict(locals()))
