"""Command line: parse, call, print. Every user error ends in one line and a non-zero exit."""

import json
import shlex
import sys
import traceback
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from pipeline import progress

app = typer.Typer(
    help="Turn a trained PyTorch image classifier into a small, fast, verified edge artifact — without its training data.\n\n"
         "Typical use: `pipeline build --teacher r34.pt --target cpu`. With no --teacher, the embedded "
         "Fashion-MNIST ResNet-20 teacher is used.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
teacher_app = typer.Typer(help="Train and inspect teachers.", no_args_is_help=True)
app.add_typer(teacher_app, name="teacher")
stdout = Console(width=None if sys.stdout.isatty() else 120)  # CI logs: wide enough for the summary table

# Options shared by several commands (typer needs them spelled out per command).
TEACHER = typer.Option(None, "--teacher", "-t", help="Teacher checkpoint: state_dict .pt (torchvision or registry arch), "
                       "pipeline checkpoint, TorchScript, torch.export .pt2, or 'embedded:NAME'. Default: embedded resnet20-fmnist.")
ARCH = typer.Option(None, "--arch", help="Registry architecture of a state_dict checkpoint (inferred from keys when omitted; see `pipeline models`).")
TARGET = typer.Option("cpu", "--target", help="Deployment target name from targets/*.toml, or a path to a target TOML file.")
BUDGET = typer.Option("quick", "--budget", help="smoke (~1 min, for tests), quick (default: 14 min of data-free training), full (1 h), "
                      "or a duration for the data-free training such as 30m (split between synthesize and distill as in quick, 1:13).")
OUT = typer.Option(None, "--out", "-o", help="Run folder (default runs/<teacher>-<target>). Re-running resumes and skips finished stages.")
TRUST = typer.Option(False, "--trust-checkpoint", help="Allow loading a fully pickled module (runs code from the file; only for files you trust).")
INPUT_SHAPE = typer.Option(None, "--input-shape", help="Model input as C,H,W (e.g. 3,224,224); needed for TorchScript teachers.")
NUM_CLASSES = typer.Option(None, "--num-classes", help="Expected class count (checked against the model's output).")
EVAL = typer.Option(None, "--eval", help="Labelled set for accuracy: 'fmnist' (Fashion-MNIST test split), an image folder "
                    "(<dir>/<class>/<img>), or 'none'. Default: fmnist for the embedded teachers.")
JSON = typer.Option(False, "--json", help="Print a machine-readable JSON summary on stdout.")
HOST = typer.Option(None, "--host", help="user@device: measure latency (and build the TensorRT engine) on that machine "
                    "over SSH, with the standalone bench script (overrides the target's host). Without a host, a "
                    "TensorRT target is measured here when TensorRT is installed, else by a labelled onnxruntime proxy.")
DEBUG = typer.Option(False, "--debug", help="Show full tracebacks.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars or status lines.")
SEED = typer.Option(0, "--seed", help="Random seed.")
STEPS = typer.Option(None, "--steps", min=1, help="Bound data-free training by steps instead of the budget's seconds "
                     "(split between synthesize and distill as the budget splits its time). Reproducible: the same "
                     "seed gives bit-identical weights on the same machine, even across an interrupted and resumed run.")
DROP_BLOCKS = typer.Option(None, "--drop-blocks", help="Drop exactly these residual blocks (comma-separated, e.g. "
                           "layer1.2,layer3.1) instead of choosing them by measured latency; the names are in the "
                           "block latency table (<out>/drop/latency_table.json).")


def _run(debug: bool, quiet: bool, action: Callable[[], object], *, out_hint: str | None = None) -> object:
    from pipeline.errors import PipelineError

    progress.set_quiet(quiet)
    try:
        return action()
    except PipelineError as error:
        if debug:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        raise typer.Exit(error.exit_code)
    except KeyboardInterrupt:
        where = f" in {out_hint}" if out_hint else ""
        print(f"interrupted: finished stages are kept{where}; run the same command again to resume", file=sys.stderr)
        raise typer.Exit(130)
    except OSError as error:
        if debug:
            traceback.print_exc()
        print(f"error: {os_error_message(error, out_hint)}", file=sys.stderr)
        raise typer.Exit(1)
    except Exception as error:  # a bug or an environment problem: still one line unless --debug
        if debug:
            traceback.print_exc()
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(f"error: unexpected {type(error).__name__}: {first_line} (run with --debug for the traceback)", file=sys.stderr)
        raise typer.Exit(1)


def os_error_message(error: OSError, out_hint: str | None) -> str:
    """Disk full, file-size limit, read-only or forbidden folder: say which file, and that nothing finished is lost."""
    import errno

    where = f" writing {error.filename}" if error.filename else ""
    kept = f"; finished stages in {out_hint} are kept and" if out_hint else ";"
    advice = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
              errno.EFBIG: "file too large for this file system or the process's file-size limit",
              errno.EROFS: "read-only file system", errno.EACCES: "permission denied"}.get(error.errno)
    if advice is None:
        return f"{error.strerror or error}{where}"
    return f"{advice}{where}{kept} the unfinished stage left nothing in place: fix it and run the same command again"


def _input_shape(text: Optional[str]):
    if text is None:
        return None
    from pipeline.models.load import parse_input_shape

    return parse_input_shape(text)


def _print_summary(summary: dict, as_json: bool) -> None:
    if as_json:
        stdout.print_json(json.dumps(summary, default=str))
        return
    table = Table(title=f"edge-pipeline — {summary['run_folder']}")
    for column in ("model", "arch", "precision", "params", "ONNX MB", "top-1", "latency median ms", "p90 ms", "CV"):
        table.add_column(column, justify="right" if column not in ("model", "arch", "precision") else "left")
    for row in summary["rows"]:
        accuracy = f"{row['accuracy'] * 100:.2f} %" if row.get("accuracy") is not None else "—"
        table.add_row(row["model"], str(row["arch"]), row.get("precision", "fp32"), f"{row['parameters']:,}",
                      f"{row['onnx_bytes'] / 1e6:.3f}", accuracy,
                      _fmt(row.get("latency_median_ms")), _fmt(row.get("latency_p90_ms")), _fmt(row.get("latency_cv"), 2))
    stdout.print(table)
    for row in summary["rows"]:
        if row.get("dropped_blocks"):
            stdout.print(f"{row['model']}: dropped blocks {', '.join(row['dropped_blocks'])}", highlight=False)
    for note in summary.get("notes", []):
        stdout.print(f"note: {note}", highlight=False, markup=False)
    stdout.print(f"manifest: {summary['manifest']}")


def _fmt(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _parse_synth_options(pairs: Optional[list[str]]) -> dict:
    from pipeline.errors import PipelineError

    parsed = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PipelineError(f"--synth-option expects KEY=VALUE, got {pair!r}")
        parsed[key.strip().replace("-", "_")] = _literal(value.strip())
    return parsed


def _block_names(text: Optional[str]) -> Optional[tuple[str, ...]]:
    if text is None:
        return None
    return tuple(name.strip() for name in text.split(",") if name.strip())


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


def _build(stage: str, *, out, debug, quiet, as_json, input_shape=None, synth_option=None, drop_blocks=None,
           **options) -> None:
    def action():
        from pipeline.build import BuildOptions, run_build

        build_options = BuildOptions(out=out, input_shape=_input_shape(input_shape),
                                     synth_options=_parse_synth_options(synth_option),
                                     drop_blocks=_block_names(drop_blocks),
                                     command=" ".join(["pipeline", *map(shlex.quote, sys.argv[1:])]), **options)
        return run_build(build_options, until=stage)

    from pipeline.distributed import env_rank

    if env_rank() != 0:  # torchrun: one rank reports
        quiet = True
    summary = _run(debug, quiet, action, out_hint=str(out) if out else None)
    if env_rank() == 0:
        _print_summary(summary, as_json)


def _command_options(values: dict) -> dict:
    """The command's parameters, as `_build` takes them (build, synthesize and distill share most options)."""
    values = dict(values)
    values["as_json"] = values.pop("json_output")
    return values


SYNTHESIZER = typer.Option("auto", "--synthesizer", "-s", help="How the transfer set is made: bn-inversion, dafl, "
                           "soft-target, images (real images from a folder), noise (baseline). auto = bn-inversion for "
                           "teachers with BatchNorm, else dafl. See `pipeline synthesizers`.")
SYNTH_PRESET = typer.Option(None, "--synth-preset", help="Named option set of the synthesizer, e.g. `--synthesizer dafl --synth-preset paper`.")
SYNTH_OPTION = typer.Option(None, "--synth-option", help="Override one synthesizer option, KEY=VALUE (repeatable), "
                            "e.g. --synth-option path=few_shot/ --synth-option per_class=10.")
DEVICE = typer.Option("auto", "--device", help="auto (a GPU when PyTorch sees one), cpu, cuda, cuda:N. Under torchrun each rank uses its LOCAL_RANK GPU.")
STUDENT = typer.Option(None, "--student", help="Student architecture (default: a smaller relative of the teacher).")
TEMPERATURE = typer.Option(None, "--temperature", help="KD temperature tau (default 4).")
EMA = typer.Option(None, "--ema", help="Hand on an exponential moving average of the student weights with this decay (e.g. 0.999).")
FEATURE_WEIGHT = typer.Option(None, "--feature-weight", help="Weight of a pre-pooling feature-matching loss (registry models; default 0 = off).")
MIX_IMAGES = typer.Option(None, "--mix-images", help="Mix a few real images into the synthetic transfer set: an image "
                          "folder (<dir>/<class>/<img>, labels unused) or fmnist-train.")
MIX_PER_CLASS = typer.Option(10, "--mix-per-class", help="Real images per class taken for --mix-images (0 = all).")
AUGMENT = typer.Option(None, "--augment/--no-augment", help="KD on shifted/flipped/mixed-up views of the transfer "
                       "images, labelled by the teacher (costs one teacher forward per student step).")
KD_STEPS = typer.Option(None, "--kd-steps", help="Student steps per synthesizer step (default 8).")
LATENCY_REDUCTION = typer.Option(None, "--latency-reduction", help="Drop residual blocks until the model is at least this "
                                 "fraction faster on the target's runtime, measured (e.g. 0.3 = 30 %% lower latency).")
LATENCY_MS = typer.Option(None, "--latency-ms", help="Drop residual blocks until the measured latency on the target is at "
                          "most this many milliseconds (default: the target's latency_budget_ms).")
IMAGES = typer.Option(None, "--images", help="Few-shot block dropping: recover with real images from this folder "
                      "(<dir>/<class>/<img>; labels unused) or fmnist-train, instead of the synthetic transfer set.")
PER_CLASS = typer.Option(50, "--per-class", help="Real images per class taken from --images (0 = all).")
DROP_ITERATIONS = typer.Option(None, "--drop-iterations", help="Recovery fine-tune iterations after dropping (default: "
                               "by budget; quick 2000, batch 64).")
DROP_LR = typer.Option(None, "--drop-lr", help="Recovery fine-tune learning rate (SGD, default 0.02, x0.1 at 40 %%).")
PRECISION = typer.Option(None, "--precision", help="Hand on fp32, fp16, int8 or binary weights (default: the target's "
                         "precision). int8 follows the target: TensorRT targets get symmetric S8S8 Q/DQ, the cpu target "
                         "the format measured fastest on this CPU.")
CALIB = typer.Option("synthetic", "--calib", help="INT8 calibration (and binary KD) data: synthetic (the transfer set, "
                     "data-free) or real (--images, unlabelled).")
CALIB_METHOD = typer.Option("minmax", "--calib-method", help="INT8 activation ranges: minmax, entropy or percentile (99.999).")
CALIB_IMAGES = typer.Option(512, "--calib-images", help="Images used for INT8 calibration (another 512 are held back for checking).")
MAX_ACCURACY_DROP = typer.Option(0.5, "--max-accuracy-drop", help="INT8: keep the most sensitive layers in float until the "
                                 "label-free estimate of the top-1 drop is at most this many points.")
BINARY_ITERATIONS = typer.Option(None, "--binary-iterations", help="Binary weights: data-free KD iterations (batch 64; "
                                 "default by budget, quick 3000).")
BINARY_COVERAGE = typer.Option(0.9, "--binary-coverage", help="Binary weights: the share of the binarisable weights made "
                               "binary; the layers that lose most accuracy per weight (measured one at a time) keep their "
                               "precision within the rest. 1.0 binarises every layer but the first and last.")
CALIB_IMAGES_DIR = typer.Option(None, "--images", help="Real images for --calib real: a folder (<dir>/<class>/<img>; labels "
                                "unused) or fmnist-train.")


@app.command()
def build(teacher: Optional[str] = TEACHER, arch: Optional[str] = ARCH, target: str = TARGET, budget: str = BUDGET,
          out: Optional[Path] = OUT, trust_checkpoint: bool = TRUST, input_shape: Optional[str] = INPUT_SHAPE,
          num_classes: Optional[int] = NUM_CLASSES, eval: Optional[str] = EVAL, student: Optional[str] = STUDENT,
          synthesizer: str = SYNTHESIZER, synth_preset: Optional[str] = SYNTH_PRESET,
          synth_option: Optional[list[str]] = SYNTH_OPTION, device: str = DEVICE, temperature: Optional[float] = TEMPERATURE,
          mix_images: Optional[str] = MIX_IMAGES, mix_per_class: int = MIX_PER_CLASS,
          ema: Optional[float] = EMA, feature_weight: Optional[float] = FEATURE_WEIGHT, kd_steps: Optional[int] = KD_STEPS,
          augment: Optional[bool] = AUGMENT, latency_reduction: Optional[float] = LATENCY_REDUCTION,
          latency_ms: Optional[float] = LATENCY_MS, precision: Optional[str] = PRECISION, calib: str = CALIB,
          calib_method: str = CALIB_METHOD, max_accuracy_drop: float = MAX_ACCURACY_DROP,
          host: Optional[str] = HOST, seed: int = SEED, steps: Optional[int] = STEPS,
          drop_blocks: Optional[str] = DROP_BLOCKS,
          force: bool = typer.Option(False, "--force", help="Re-run every stage even if up to date."),
          json_output: bool = JSON, debug: bool = DEBUG, quiet: bool = QUIET):
    """Run every stage: synthesize -> distill -> [drop] -> export -> [quantize] -> [engine] -> bench, into one run folder.

    With --latency-reduction or --latency-ms (or a target file with a latency budget, like the Jetsons) the
    build searches for the most accurate model that meets it, measured on the target: blocks dropped from the
    teacher or the distilled student x precision (see `pipeline search`); --drop-blocks names the blocks instead.
    With --precision int8|fp16|binary (or a target whose precision is not fp32) the exported student is
    quantised (see `pipeline quantize`). TensorRT targets get an engine (see `pipeline engine`).
    --steps N and --seed make the whole build reproducible byte for byte (with --drop-blocks, no search).

    Example (laptop, no Jetson at hand: latency by labelled proxy, engine command left for the device):
        pipeline build --teacher r34.pt --target jetson
    Example (measured on the device): pipeline build --teacher r34.pt --target jetson-orin-nano --host me@jetson.local

    Data-free: the student never sees a labelled image (unless you choose `--synthesizer images`); accuracy
    is measured afterwards on the exported ONNX model when --eval (or the embedded teacher's dataset) is available.
    Data-parallel: `torchrun --nproc-per-node 2 -m pipeline build ...` (gloo on CPU, NCCL on GPUs).
    """
    values = _command_options(locals())
    if drop_blocks is not None:
        values["drop_from"] = "student"  # the blocks are named: no search
    elif latency_reduction is not None or latency_ms is not None:
        values["search"] = "build"
    _build("bench", **values, auto_drop=True)


@app.command()
def search(teacher: Optional[str] = TEACHER, arch: Optional[str] = ARCH, target: str = TARGET, budget: str = BUDGET,
           out: Optional[Path] = OUT, trust_checkpoint: bool = TRUST, input_shape: Optional[str] = INPUT_SHAPE,
           num_classes: Optional[int] = NUM_CLASSES, eval: Optional[str] = EVAL,
           latency_reduction: Optional[float] = LATENCY_REDUCTION, latency_ms: Optional[float] = LATENCY_MS,
           precision: Optional[str] = typer.Option(None, "--precision", help="Search only this precision (default: "
                                                   "every precision the target allows, of fp32, fp16, int8)."),
           drop_iterations: Optional[int] = DROP_ITERATIONS, drop_lr: Optional[float] = DROP_LR,
           calib_images: int = CALIB_IMAGES, synthesizer: str = SYNTHESIZER, synth_preset: Optional[str] = SYNTH_PRESET,
           synth_option: Optional[list[str]] = SYNTH_OPTION, device: str = DEVICE, host: Optional[str] = HOST,
           seed: int = SEED, steps: Optional[int] = STEPS,
           force: bool = typer.Option(False, "--force", help="Re-run every stage even if up to date."),
           json_output: bool = JSON, debug: bool = DEBUG, quiet: bool = QUIET):
    """The most accurate model from the teacher that meets a latency budget, found by measuring.

    Searches blocks dropped (prefixes of the PRACTISE order) x precision (fp32/fp16/int8, as the target allows).
    Cheap first: the block latency table, the drop order and each precision's speed-up are measured once and
    predict every candidate's latency; only those next to the budget line are fine-tuned, quantised and timed
    (interleaved with the teacher, on the target's runner). Accuracy is estimated without labels on held-back
    synthetic images; --eval only reports real accuracy beside it. Everything measured is cached in <out>/cache/,
    so searching the same --out with another budget reuses it. Writes <out>/search/pareto.csv, pareto.png and
    choice.md (why this point), then exports, quantises and benchmarks the choice as `build` does.
    `pipeline build --latency-ms X` runs the same search with the distilled student as a second base.

    Example: pipeline search --latency-reduction 0.3 --out runs/r20-search
    """
    _build("bench", **_command_options(locals()), search="teacher")


@app.command()
def drop(teacher: Optional[str] = TEACHER, arch: Optional[str] = ARCH, target: str = TARGET, budget: str = BUDGET,
         out: Optional[Path] = OUT, trust_checkpoint: bool = TRUST, input_shape: Optional[str] = INPUT_SHAPE,
         num_classes: Optional[int] = NUM_CLASSES, eval: Optional[str] = EVAL,
         latency_reduction: Optional[float] = LATENCY_REDUCTION, latency_ms: Optional[float] = LATENCY_MS,
         images: Optional[str] = IMAGES, per_class: int = PER_CLASS, drop_iterations: Optional[int] = DROP_ITERATIONS,
         drop_lr: Optional[float] = DROP_LR, synthesizer: str = SYNTHESIZER, synth_preset: Optional[str] = SYNTH_PRESET,
         synth_option: Optional[list[str]] = SYNTH_OPTION, device: str = DEVICE, host: Optional[str] = HOST,
         seed: int = SEED, steps: Optional[int] = STEPS, drop_blocks: Optional[str] = DROP_BLOCKS, force: bool = typer.Option(False, "--force", help="Re-run every stage even if up to date."),
         json_output: bool = JSON, debug: bool = DEBUG, quiet: bool = QUIET):
    """Drop whole residual blocks from the teacher where they cost the most latency on the target (PRACTISE).

    Measures each block's latency saving on the target's runtime (cached in <out>/cache/), scores blocks by
    recoverability / saving with identity-initialised 1x1 adapters, drops greedily until the budget is met
    (checked by measuring), fine-tunes on the synthetic transfer set (data-free; `synthesize` runs first) or on
    --images (few-shot), folds the adapters into the convolutions, then exports and benchmarks both models.

    Example: pipeline drop --latency-reduction 0.3 --out runs/r20-drop
    """
    _build("bench", **_command_options(locals()), drop_from="teacher")


@app.command()
def quantize(teacher: Optional[str] = TEACHER, arch: Optional[str] = ARCH, target: str = TARGET, budget: str = BUDGET,
             out: Optional[Path] = OUT, trust_checkpoint: bool = TRUST, input_shape: Optional[str] = INPUT_SHAPE,
             num_classes: Optional[int] = NUM_CLASSES, eval: Optional[str] = EVAL,
             precision: str = typer.Option("int8", "--precision", help="int8, fp16 or binary (weights: alpha * sign(W))."),
             calib: str = CALIB, calib_method: str = CALIB_METHOD, images: Optional[str] = CALIB_IMAGES_DIR,
             calib_images: int = CALIB_IMAGES, max_accuracy_drop: float = MAX_ACCURACY_DROP,
             binary_iterations: Optional[int] = BINARY_ITERATIONS, binary_coverage: float = BINARY_COVERAGE,
             synthesizer: str = SYNTHESIZER,
             synth_preset: Optional[str] = SYNTH_PRESET, synth_option: Optional[list[str]] = SYNTH_OPTION,
             device: str = DEVICE, host: Optional[str] = HOST, seed: int = SEED, steps: Optional[int] = STEPS,
             force: bool = typer.Option(False, "--force", help="Re-run every stage even if up to date."),
             json_output: bool = JSON, debug: bool = DEBUG, quiet: bool = QUIET):
    """Quantise the teacher for the target, data-free: INT8, FP16 or binary weights, verified against fp32.

    INT8 (onnxruntime quantize_static, per-channel symmetric weights): for TensorRT targets symmetric S8S8 Q/DQ
    that TensorRT 10/11 parse and fuse; for the cpu target the format measured fastest on this CPU (its INT8
    instruction set is recorded). Calibrated on the synthetic transfer set (`synthesize` runs first) unless
    --calib real --images DIR. If the label-free estimate of the accuracy drop exceeds --max-accuracy-drop, the
    most sensitive layers stay in float. FP16: float16 weights and compute, float32 inputs/outputs.
    Binary: BWN weights trained by data-free KD, first and last layers kept, and the layers that lose most
    per weight within 1 - --binary-coverage of the weights; exported as exact +-alpha INT8
    weights plus a packed 1-bit checkpoint (<out>/quantize/binary_weights.pt).
    Every result is compared with the fp32 model in onnxruntime (output error, accuracy with --eval) and timed.

    Example: pipeline quantize --precision int8 --calib-method percentile --out runs/r20-int8
    """
    _build("bench", **_command_options(locals()), quantize_from="teacher")


@app.command()
def synthesize(teacher: Optional[str] = TEACHER, arch: Optional[str] = ARCH, target: str = TARGET, budget: str = BUDGET,
               out: Optional[Path] = OUT, trust_checkpoint: bool = TRUST, input_shape: Optional[str] = INPUT_SHAPE,
               num_classes: Optional[int] = NUM_CLASSES, synthesizer: str = SYNTHESIZER,
               synth_preset: Optional[str] = SYNTH_PRESET, synth_option: Optional[list[str]] = SYNTH_OPTION,
               device: str = DEVICE, mix_images: Optional[str] = MIX_IMAGES, mix_per_class: int = MIX_PER_CLASS,
               seed: int = SEED, steps: Optional[int] = STEPS,
               force: bool = typer.Option(False, "--force", help="Re-run even if up to date."),
               json_output: bool = JSON, debug: bool = DEBUG, quiet: bool = QUIET):
    """Make a transfer set from the frozen teacher: <out>/synthesize/transfer_set.pt (uint8 images + teacher
    logits), synthesizer.pt (generator state, continued by `distill`) and samples.png."""
    _build("synthesize", **_command_options(locals()), eval="none")


@app.command()
def distill(teacher: Optional[str] = TEACHER, arch: Optional[str] = ARCH, target: str = TARGET, budget: str = BUDGET,
            out: Optional[Path] = OUT, trust_checkpoint: bool = TRUST, input_shape: Optional[str] = INPUT_SHAPE,
            num_classes: Optional[int] = NUM_CLASSES, eval: Optional[str] = EVAL, student: Optional[str] = STUDENT,
            synthesizer: str = SYNTHESIZER, synth_preset: Optional[str] = SYNTH_PRESET,
            synth_option: Optional[list[str]] = SYNTH_OPTION, device: str = DEVICE,
            mix_images: Optional[str] = MIX_IMAGES, mix_per_class: int = MIX_PER_CLASS, temperature: Optional[float] = TEMPERATURE, ema: Optional[float] = EMA,
            feature_weight: Optional[float] = FEATURE_WEIGHT, kd_steps: Optional[int] = KD_STEPS,
            augment: Optional[bool] = AUGMENT, seed: int = SEED, steps: Optional[int] = STEPS,
            force: bool = typer.Option(False, "--force", help="Re-run even if up to date."),
            json_output: bool = JSON, debug: bool = DEBUG, quiet: bool = QUIET):
    """Distil the student on the transfer set while the synthesizer keeps producing (runs `synthesize` first
    if needed). --eval only draws an accuracy-vs-time curve; it never picks a checkpoint.
    Data-parallel: `torchrun --nproc-per-node 2 -m pipeline distill ...`."""
    _build("distill", **_command_options(locals()))


@app.command()
def synthesizers(json_output: bool = JSON):
    """List the synthesizers, their presets and options (set with --synth-preset / --synth-option KEY=VALUE)."""
    from pipeline.synthesize.base import list_synthesizers, synthesizer_class

    rows = [{"name": name, "description": text, "presets": list(synthesizer_class(name).presets),
             "options": synthesizer_class(name).defaults} for name, text in list_synthesizers().items()]
    if json_output:
        stdout.print_json(json.dumps(rows))
        return
    table = Table(title="synthesizers")
    for column in ("name", "description", "presets", "options (defaults)"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["description"], ", ".join(row["presets"]) or "—",
                      ", ".join(f"{k}={v}" for k, v in row["options"].items()))
    stdout.print(table)


@app.command()
def export(teacher: Optional[str] = TEACHER, arch: Optional[str] = ARCH, out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
           trust_checkpoint: bool = TRUST, input_shape: Optional[str] = INPUT_SHAPE, num_classes: Optional[int] = NUM_CLASSES,
           eval: Optional[str] = EVAL, opset: int = typer.Option(17, "--opset", help="ONNX opset (>= 17)."),
           json_output: bool = JSON, debug: bool = DEBUG, quiet: bool = QUIET):
    """Export a checkpoint directly to ONNX (dynamic batch), checked and compared with PyTorch.

    Example: pipeline export --teacher r34.pt --arch resnet34 --out exported/
    """
    def action():
        from pipeline.assets import resolve_teacher
        from pipeline.export.stage import ExportConfig, ExportStage
        from pipeline.stage import RunFolder
        from pipeline.teacher_spec import TeacherSpec

        spec = TeacherSpec(arch, _input_shape(input_shape), num_classes, trust_checkpoint)
        stage = ExportStage({"model": resolve_teacher(teacher)}, ExportConfig(opset=opset, eval=eval, specs={"model": spec}))
        entry = RunFolder(out).run(stage, force=True)
        return {"onnx": str(Path(out) / entry["artifacts"]["model"]["path"]), **entry["metrics"]["model"]}

    result = _run(debug, quiet, action)
    if json_output:
        stdout.print_json(json.dumps(result, default=str))
    else:
        stdout.print(f"{result['onnx']}: {result['size_bytes'] / 1e6:.2f} MB, parity max |diff| "
                     f"{result['parity_max_abs_diff']:.2e}, top-1 agreement {result['parity_top1_agreement']:.4f}")


@app.command()
def bench(teacher: Optional[str] = typer.Option(None, "--teacher", "-t", help="Model to measure: any checkpoint `build` accepts, "
                                                "or an exported .onnx file. Default: the embedded teacher."),
          arch: Optional[str] = ARCH, target: str = TARGET, budget: str = BUDGET,
          out: Path = typer.Option(..., "--out", "-o", help="Folder for the export and bench results."),
          trust_checkpoint: bool = TRUST, input_shape: Optional[str] = INPUT_SHAPE, num_classes: Optional[int] = NUM_CLASSES,
          eval: Optional[str] = EVAL, host: Optional[str] = HOST, json_output: bool = JSON, debug: bool = DEBUG,
          quiet: bool = QUIET):
    """Measure latency on the target's runtime (warm-up, then median/p90/p99/CV with pinned threads), and top-1
    accuracy when a labelled set is given. Checkpoints are exported to ONNX (with parity check) first.

    With --host (or a target file with a host) the ONNX and a standalone bench script are copied to the device
    over SSH; the script builds the TensorRT engine there (or uses onnxruntime when the device has no TensorRT),
    records nvpmodel mode, jetson_clocks, JetPack/TensorRT versions and temperatures, and one JSON comes back.

    Example: pipeline bench --teacher model.onnx --target jetson-orin-nano --host me@jetson.local --out runs/b
    """
    def action():
        from pipeline.build import run_bench_only
        from pipeline.teacher_spec import TeacherSpec

        spec = TeacherSpec(arch, _input_shape(input_shape), num_classes, trust_checkpoint)
        return run_bench_only(teacher, spec=spec, target_name=target, budget_name=budget, out=out, eval_spec=eval,
                              host=host)

    result = _run(debug, quiet, action)
    if json_output:
        stdout.print_json(json.dumps(result, default=str))
        return
    latency = result["latency"]
    accuracy = f", top-1 {result['accuracy'] * 100:.2f} % on {result['eval_images']} images" if "accuracy" in result else ""
    where = {"remote": f" on {result.get('measured_on', {}).get('host')} ({result.get('measured_on', {}).get('runtime')})",
             "proxy": f" (proxy: onnxruntime here stands in for {result.get('proxy_for')})"}.get(result.get("latency_source"), "")
    stdout.print(f"{result['onnx']}: median {latency['median_ms']:.3f} ms{where}, p90 {latency['p90_ms']:.3f} ms, "
                 f"p99 {latency['p99_ms']:.3f} ms, CV {latency['cv']:.2f}{accuracy}")


@app.command()
def engine(onnx: Optional[Path] = typer.Option(None, "--onnx", help="ONNX file to build the engine from."),
           run: Optional[Path] = typer.Option(None, "--run", help="Run folder: build its handed-on model (quantised, else student)."),
           target: str = typer.Option("jetson-orin-nano", "--target", help="A TensorRT target (see `pipeline targets`)."),
           precision: Optional[str] = typer.Option(None, "--precision", help="fp32, fp16 or int8 (default: the target's). "
                                                   "TensorRT 11 takes precision from the ONNX: give an ONNX in that precision."),
           host: Optional[str] = HOST, out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder for the engine (default: --run, or runs/<onnx>-<target>-engine)."),
           json_output: bool = JSON, debug: bool = DEBUG, quiet: bool = QUIET):
    """Build a TensorRT engine (TensorRT 10 or 11) for a TensorRT target, after a pre-flight check.

    Where it is built: on --host (or the target's host) over SSH, the engine copied back; else here when
    TensorRT (in the target's version range) and a GPU are present; else nowhere: <out>/engine/ then holds the
    ONNX, build_on_device.sh (the trtexec command) and BUILD_ON_DEVICE.md. The engine is stamped with its
    TensorRT version, GPU name and compute capability (model.engine.json); loading it elsewhere fails clearly.
    Dynamic batch gets one optimisation profile (1 .. max_batch, tuned at the target's batch); the timing cache
    stays in the run folder; DLA targets build for their DLA core with GPU fallback.

    Example: pipeline engine --run runs/resnet20-fmnist-jetson-orin-nano --target jetson-orin-nano
    """
    def action():
        from pipeline.build import run_engine_only

        return run_engine_only(onnx, run, target_name=target, host=host, precision_name=precision, out=out)

    result = _run(debug, quiet, action)
    if json_output:
        stdout.print_json(json.dumps(result, default=str))
    elif result.get("built"):
        stamp = result["stamp"]
        stdout.print(f"{result['run_folder']}/engine/model.engine: TensorRT {stamp.get('tensorrt_version')}, "
                     f"{stamp.get('gpu_name')} (compute {stamp.get('compute_capability')}), built on {result['built_on']}")
    else:
        stdout.print(f"engine not built: {result['reason']}\nrun on the device: {result['run_folder']}/engine/build_on_device.sh")


@app.command()
def check(onnx: Path = typer.Argument(..., help="ONNX file to check."),
          precision: str = typer.Option("fp16", "--precision", help="Precision the engine will run in: sets the "
                                        "tensor-core alignment rule (fp16: multiples of 8, int8: of 32; fp32: none)."),
          json_output: bool = JSON, debug: bool = DEBUG):
    """Pre-flight an ONNX file for TensorRT without TensorRT: ops its ONNX parser does not support (QLinearConv,
    ConvInteger, contrib ops), non-zero or non-int8 Q/DQ zero points, unsupported dtypes, and layers whose
    channel counts miss the tensor cores. Exit status 1 when TensorRT would refuse the model.

    Example: pipeline check runs/r20-int8/quantize/model.onnx --precision int8
    """
    def action():
        from pipeline.engine.preflight import preflight

        return preflight(onnx, precision)

    report = _run(debug, False, action)
    if json_output:
        stdout.print_json(json.dumps(report.to_dict()))
    else:
        print(report.format())
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def gate(candidate: Path = typer.Argument(..., help="The model to check: an ONNX file or a run folder (its handed-on model)."),
         baseline: Path = typer.Option(..., "--baseline", "-b", help="Baseline file (JSON; its model is kept beside it)."),
         target: str = TARGET, host: Optional[str] = HOST,
         max_regression: Optional[str] = typer.Option(None, "--max-regression", help="Allowed slowdown, e.g. 5% "
                                                      "(default: the target's [gate] max_regression, else 5%)."),
         rounds: Optional[int] = typer.Option(None, "--rounds", help="Interleaved baseline/candidate rounds (paired "
                                              "ratios; default: the target's [gate] rounds, else 30)."),
         runs: Optional[int] = typer.Option(None, "--runs", help="Timed runs per model per round (default: the "
                                            "target's [gate] runs, else 200)."),
         update_baseline: bool = typer.Option(False, "--update-baseline", help="Write CANDIDATE as the new baseline "
                                              "(model copied beside it; environment recorded) instead of gating."),
         strict_environment: bool = typer.Option(False, "--strict-environment", help="Exit 2 when the environment "
                                                 "(CPU, threads, runtime version) differs from the baseline's."),
         junit: Optional[Path] = typer.Option(None, "--junit", help="Also write a JUnit XML report here."),
         json_output: bool = JSON, debug: bool = DEBUG, quiet: bool = QUIET):
    """Fail a merge when latency regresses: exit 0 pass, 1 regression, 2 could not measure.

    Baseline and candidate are measured now, on this machine (or the target's --host), in alternating rounds, so
    drift cancels; the verdict is a regression when the bootstrap interval of the (20 % trimmed) mean per-round
    ratio lies above 1 and the ratio exceeds 1 + --max-regression. A baseline from another environment is a warning (both
    models are re-measured anyway), or an error with --strict-environment.

    Example: pipeline gate runs/pr/ --baseline ci/latency-baseline.json --max-regression 5% --junit gate.xml
    """
    from pipeline import progress

    progress.set_quiet(quiet or json_output)

    def action():
        from pipeline.gate.gate import GateSettings, parse_regression, run_gate, write_baseline
        from pipeline.targets import load_target

        loaded = load_target(target).with_host(host)
        threshold = parse_regression(max_regression) if max_regression is not None else \
            loaded.gate_max_regression if loaded.gate_max_regression is not None else 0.05
        settings = GateSettings(max_regression=threshold, rounds=rounds or loaded.gate_rounds or 30,
                                runs=runs or loaded.gate_runs or 200, strict_environment=strict_environment)
        if update_baseline:
            return {"baseline_written": write_baseline(candidate, baseline, loaded, settings)}
        return run_gate(candidate, baseline, loaded, settings)

    result = _run(debug, quiet or json_output, action)
    if "baseline_written" in result:
        record = result["baseline_written"]
        if json_output:
            stdout.print_json(json.dumps(record, default=str))
        else:
            stdout.print(f"baseline written: {baseline} ({record['model_file']} beside it), median "
                         f"{record['median_ms']:.4f} ms on {record['environment']['cpu']}", highlight=False)
        return
    if junit is not None:
        from pipeline.gate.junit import write_junit

        write_junit(result, junit)
    if json_output:
        stdout.print_json(json.dumps(result, default=str))
    else:
        from pipeline.gate.gate import explain

        print(explain(result))
    raise typer.Exit(result["exit_code"])


@app.command()
def bundle(run: Path = typer.Argument(..., help="A run folder (after `pipeline build`, `drop` or `quantize`)."),
           out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where the folder and .tar.gz go (default RUN/bundle)."),
           json_output: bool = JSON, debug: bool = DEBUG):
    """Package a run for a mobile team: models (ONNX per precision, engines with their TensorRT/GPU stamps),
    manifest.json (sha256 of every file, I/O names/shapes/dtypes, preprocessing, class labels, accuracy, latency
    per target with the harness settings, build command, library versions, teacher hash), MODEL_CARD.md,
    pareto.png, reference input/outputs and example/infer.py; as a folder and a .tar.gz.

    Example: pipeline bundle runs/resnet20-fmnist-cpu && pipeline verify runs/resnet20-fmnist-cpu/bundle/resnet20-fmnist-cpu.tar.gz
    """
    def action():
        from pipeline.bundle.bundle import make_bundle

        return make_bundle(run, out)

    result = _run(debug, False, action)
    if json_output:
        stdout.print_json(json.dumps(result))
    else:
        stdout.print(f"bundle: {result['bundle']} ({result['files']} files; models {', '.join(result['models'])})\n"
                     f"archive: {result['archive']}", highlight=False)


@app.command()
def verify(bundle: Path = typer.Argument(..., help="A bundle folder or its .tar.gz."), json_output: bool = JSON,
           debug: bool = DEBUG):
    """Check a bundle: every file's sha256 against the manifest (and the manifest against manifest.sha256), no
    unlisted files, every model loads and reproduces its reference output. Exit 0 when intact, else one line
    naming the first problem and exit 2.
    """
    def action():
        from pipeline.bundle.verify import verify_bundle

        return verify_bundle(bundle)

    result = _run(debug, False, action)
    if json_output:
        stdout.print_json(json.dumps(result))
    else:
        models = ", ".join(f"{m['file']} (max |diff| {m['max_abs_diff']:.1e})" for m in result["models"])
        stdout.print(f"bundle intact: {result['files_checked']} files match the manifest; models reproduce their "
                     f"reference outputs: {models}", highlight=False)


@app.command()
def report(run: Path = typer.Argument(..., help="A run folder."),
           out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for summary.md/.csv and pareto.png (default RUN/report)."),
           json_output: bool = JSON, debug: bool = DEBUG):
    """Summary table of a run folder (teacher vs handed-on model: precision, size, accuracy, latency and where it
    was measured) as markdown and CSV, and the accuracy-vs-latency Pareto plot when accuracy was measured."""
    def action():
        from pipeline.bundle.report import write_report

        return write_report(run, out)

    result = _run(debug, False, action)
    if json_output:
        stdout.print_json(json.dumps(result))
    else:
        print(result["markdown"])
        print(f"\nwritten to {result['folder']}/")


@app.command()
def models(json_output: bool = JSON):
    """List the architectures in the registry."""
    from pipeline.models import get_spec, list_models

    rows = [get_spec(name) for name in list_models()]
    if json_output:
        stdout.print_json(json.dumps([{"name": s.name, "family": s.family, "input": s.default_input,
                                       "classes": s.default_classes} for s in rows]))
        return
    table = Table(title="architectures")
    for column in ("name", "family", "default input", "classes", "description"):
        table.add_column(column)
    for spec in rows:
        table.add_row(spec.name, spec.family, "x".join(map(str, spec.default_input)), str(spec.default_classes), spec.description)
    stdout.print(table)


@app.command()
def targets(json_output: bool = JSON, debug: bool = DEBUG):
    """List the deployment targets (targets/*.toml)."""
    def action():
        from pipeline.targets import available_targets, load_target

        return [load_target(name).to_dict() for name in available_targets()]

    rows = _run(debug, False, action)
    if json_output:
        stdout.print_json(json.dumps(rows, default=str))
        return
    table = Table(title="targets")
    for column in ("name", "runtime", "device", "precision", "batch", "description"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["runtime"], row["device"], row["precision"], str(row["batch"]), row["description"])
    stdout.print(table)


@teacher_app.command("train")
def teacher_train(arch: str = typer.Option(..., "--arch", help="Registry architecture, e.g. lenet5 or resnet20."),
                  out: Path = typer.Option(..., "--out", "-o", help="Checkpoint file to write."),
                  epochs: int = typer.Option(..., "--epochs", help="Training epochs over the 60k Fashion-MNIST images."),
                  seed: int = SEED, batch_size: int = typer.Option(128, "--batch-size"),
                  lr: float = typer.Option(0.1, "--lr", help="Peak learning rate (SGD, one-cycle)."),
                  train_images: Optional[int] = typer.Option(None, "--train-images", help="Use only the first N training images (quick checks)."),
                  json_output: bool = JSON, debug: bool = DEBUG, quiet: bool = QUIET):
    """Train a teacher on Fashion-MNIST (how the embedded teachers were made). The test split is used only
    once, after training, to record the final accuracy."""
    def action():
        from pipeline.teacher.train import train_teacher

        return train_teacher(arch, out, epochs=epochs, seed=seed, batch_size=batch_size, lr=lr,
                             train_images=train_images)

    record = _run(debug, quiet, action)
    if json_output:
        stdout.print_json(json.dumps(record, default=str))
    else:
        stdout.print(f"{out}: test accuracy {record['test_accuracy'] * 100:.2f} % after {epochs} epochs")


@teacher_app.command("inspect")
def teacher_inspect(teacher: Optional[str] = TEACHER, arch: Optional[str] = ARCH, trust_checkpoint: bool = TRUST,
                    input_shape: Optional[str] = INPUT_SHAPE, num_classes: Optional[int] = NUM_CLASSES,
                    json_output: bool = JSON, debug: bool = DEBUG):
    """Show what a checkpoint is: format, architecture, input shape, classes, preprocessing."""
    def action():
        from pipeline.assets import resolve_teacher
        from pipeline.teacher_spec import TeacherSpec

        loaded = TeacherSpec(arch, _input_shape(input_shape), num_classes, trust_checkpoint).load(resolve_teacher(teacher))
        return {"path": str(loaded.path), "format": loaded.source_format, "arch": loaded.arch,
                "input_shape": list(loaded.input_shape), "num_classes": loaded.num_classes,
                "parameters": sum(p.numel() for p in loaded.model.parameters()),
                "preprocess": loaded.preprocess.to_dict(), "metadata": loaded.metadata}

    info = _run(debug, False, action)
    if json_output:
        stdout.print_json(json.dumps(info, default=str))
    else:
        for key, value in info.items():
            stdout.print(f"{key}: {value}", highlight=False)


if __name__ == "__main__":
    app()
