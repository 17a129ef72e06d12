"""The options several commands share, each in its help panel. Typer needs a parameter per command, so they are
declared here once and named in each signature.

Options that `BuildOptions` has a default for are `None` here (= not given) and show that default in their
help: the default lives on the dataclass only, and the recipe fills in what the user did not give."""

import dataclasses

import typer

from pipeline.recipes.options import BuildOptions

TEACHER_PANEL = "Teacher"
TRAINING_PANEL = "Data-free training"
COMPRESSION_PANEL = "Compression"
TARGET_PANEL = "Target and measurement"
OUTPUT_PANEL = "Output"

BUILD_COMMANDS = "Build a model (each a recipe of stages in one run folder)"
MODEL_COMMANDS = "One model at a time"
CI_COMMANDS = "CI gates and hand-off"
INFO_COMMANDS = "Information"


def shown_default(name: str) -> str:
    """`BuildOptions`' default for `name`, as the help shows it."""
    value = {f.name: f.default for f in dataclasses.fields(BuildOptions)}[name]
    return str(value)


def build_option(name: str, *flags: str, panel: str, help: str, **more):
    """An option whose default is BuildOptions.<name>: None when not given, its default shown in the help."""
    return typer.Option(None, *flags, help=help, rich_help_panel=panel, show_default=shown_default(name), **more)


# --- teacher ---
TEACHER = typer.Option(
    None,
    "--teacher",
    "-t",
    rich_help_panel=TEACHER_PANEL,
    help=(
        "Teacher checkpoint: a state_dict `.pt` (torchvision or registry architecture), a pipeline checkpoint, "
        "TorchScript, a torch.export `.pt2`, or `embedded:NAME`. Default: the embedded resnet20-fmnist."
    ),
)
ARCH = typer.Option(
    None,
    "--arch",
    rich_help_panel=TEACHER_PANEL,
    help=(
        "Registry architecture of a state_dict checkpoint (inferred from its keys when omitted; see `pipeline models`)."
    ),
)
TRUST = typer.Option(
    False,
    "--trust-checkpoint",
    rich_help_panel=TEACHER_PANEL,
    help=("Allow loading a fully pickled module (runs code from the file: only for files you trust)."),
)
INPUT_SHAPE = typer.Option(
    None,
    "--input-shape",
    rich_help_panel=TEACHER_PANEL,
    help=("Model input as C,H,W (e.g. 3,224,224); needed for TorchScript teachers."),
)
NUM_CLASSES = typer.Option(
    None,
    "--num-classes",
    rich_help_panel=TEACHER_PANEL,
    help=("Expected class count (checked against the model's output)."),
)

MEAN = typer.Option(
    None,
    "--mean",
    rich_help_panel=TEACHER_PANEL,
    help=(
        "Per-channel mean the teacher was trained with, on pixels already divided by --pixel-scale: 0.5 or "
        "0.485,0.456,0.406. Default: what the checkpoint records, else a guess (ImageNet for RGB, Fashion-MNIST "
        "for gray) named in a warning."
    ),
)
STD = typer.Option(None, "--std", rich_help_panel=TEACHER_PANEL, help="Per-channel std, as --mean (e.g. 0.5).")
CHANNEL_ORDER = typer.Option(
    None, "--channel-order", rich_help_panel=TEACHER_PANEL, help="RGB, BGR or gray: the teacher's input channels."
)
PIXEL_SCALE = typer.Option(
    None,
    "--pixel-scale",
    rich_help_panel=TEACHER_PANEL,
    help="Raw pixel values are divided by this before (x - mean) / std: 255 for ToTensor, 1 for 0-255 inputs.",
)
PREPROCESS_FILE = typer.Option(
    None,
    "--preprocess",
    rich_help_panel=TEACHER_PANEL,
    help="A JSON or TOML file with mean, std, channel_order and pixel_scale (the flags above win over it).",
)

# --- data-free training ---
BUDGET = build_option(
    "budget",
    "--budget",
    panel=TRAINING_PANEL,
    help=(
        "smoke (about 1 min, for tests), quick (14 min of data-free training), full (1 h), or a duration for the "
        "data-free training such as 30m (split between synthesize and distill as in quick, 1:13)."
    ),
)
STEPS = typer.Option(
    None,
    "--steps",
    min=1,
    rich_help_panel=TRAINING_PANEL,
    help=(
        "Bound data-free training by steps instead of the budget's seconds (split between synthesize and distill as "
        "the budget splits its time). Reproducible: the same seed gives bit-identical weights on the same machine, "
        "even across an interrupted and resumed run."
    ),
)
SEED = build_option("seed", "--seed", panel=TRAINING_PANEL, help="Random seed.")
SYNTHESIZER = build_option(
    "synthesizer",
    "--synthesizer",
    "-s",
    panel=TRAINING_PANEL,
    help=(
        "How the transfer set is made: bn-inversion, dafl, soft-target, images (real images from a folder), noise "
        "(baseline). auto = bn-inversion for teachers with BatchNorm, else dafl. See `pipeline synthesizers`."
    ),
)
SYNTH_PRESET = typer.Option(
    None,
    "--synth-preset",
    rich_help_panel=TRAINING_PANEL,
    help=("Named option set of the synthesizer, e.g. `--synthesizer dafl --synth-preset paper`."),
)
SYNTH_OPTION = typer.Option(
    None,
    "--synth-option",
    rich_help_panel=TRAINING_PANEL,
    help=(
        "Override one synthesizer option, KEY=VALUE (repeatable), e.g. `--synth-option path=few_shot/ "
        "--synth-option per_class=10`."
    ),
)
DEVICE = build_option(
    "device",
    "--device",
    panel=TRAINING_PANEL,
    help=("auto (a GPU when PyTorch sees one), cpu, cuda, cuda:N. Under torchrun each rank uses its LOCAL_RANK GPU."),
)
MAX_MEMORY = build_option(
    "max_memory_gib",
    "--max-memory",
    panel=TRAINING_PANEL,
    min=0.5,
    help="GiB the data-free steps may use: their batch is halved (not below 8) until a step fits, with a note.",
)
STUDENT = typer.Option(
    None,
    "--student",
    rich_help_panel=TRAINING_PANEL,
    help=("Student architecture (default: a smaller relative of the teacher)."),
)
TEMPERATURE = typer.Option(
    None, "--temperature", rich_help_panel=TRAINING_PANEL, help="KD temperature tau (default 4)."
)
EMA = typer.Option(
    None,
    "--ema",
    rich_help_panel=TRAINING_PANEL,
    help=("Hand on an exponential moving average of the student weights with this decay (e.g. 0.999)."),
)
FEATURE_WEIGHT = typer.Option(
    None,
    "--feature-weight",
    rich_help_panel=TRAINING_PANEL,
    help=("Weight of a pre-pooling feature-matching loss (registry models; default 0 = off)."),
)
MIX_IMAGES = typer.Option(
    None,
    "--mix-images",
    rich_help_panel=TRAINING_PANEL,
    help=(
        "Mix a few real images into the synthetic transfer set: an image folder (`DIR/CLASS/IMAGE`, labels unused) "
        "or fmnist-train."
    ),
)
MIX_PER_CLASS = build_option(
    "mix_per_class",
    "--mix-per-class",
    panel=TRAINING_PANEL,
    help=("Real images per class taken for --mix-images (0 = all)."),
)
AUGMENT = typer.Option(
    None,
    "--augment/--no-augment",
    rich_help_panel=TRAINING_PANEL,
    help=(
        "KD on shifted, flipped and mixed-up views of the transfer images, labelled by the teacher (costs one "
        "teacher forward per student step)."
    ),
)
KD_STEPS = typer.Option(
    None, "--kd-steps", rich_help_panel=TRAINING_PANEL, help=("Student steps per synthesizer step (default 8).")
)
CLASS_BALANCE = typer.Option(
    None,
    "--class-balance",
    rich_help_panel=TRAINING_PANEL,
    help=(
        "Draw KD batches against the transfer set's class skew: each image weighted by 1 / (images of its "
        "teacher class) ** X; 1 = every class equally often (default), 0 = uniform."
    ),
)

# --- compression ---
LATENCY_REDUCTION = typer.Option(
    None,
    "--latency-reduction",
    rich_help_panel=COMPRESSION_PANEL,
    help=(
        "Drop residual blocks until the model is at least this fraction faster on the target's runtime, measured "
        "(e.g. 0.3 = 30 % lower latency)."
    ),
)
LATENCY_MS = typer.Option(
    None,
    "--latency-ms",
    rich_help_panel=COMPRESSION_PANEL,
    help=(
        "Drop residual blocks until the measured latency on the target is at most this many milliseconds (default: "
        "the target's latency_budget_ms)."
    ),
)
DROP_BLOCKS = typer.Option(
    None,
    "--drop-blocks",
    rich_help_panel=COMPRESSION_PANEL,
    help=(
        "Drop exactly these residual blocks (comma-separated, e.g. layer1.2,layer3.1) instead of choosing them by "
        "measured latency; the names are in the block latency table (`OUT/drop/latency_table.json`)."
    ),
)
IMAGES = typer.Option(
    None,
    "--images",
    rich_help_panel=COMPRESSION_PANEL,
    help=(
        "Few-shot block dropping: recover with real images from this folder (`DIR/CLASS/IMAGE`; labels unused) or "
        "fmnist-train, instead of the synthetic transfer set."
    ),
)
PER_CLASS = build_option(
    "per_class", "--per-class", panel=COMPRESSION_PANEL, help=("Real images per class taken from --images (0 = all).")
)
DROP_ITERATIONS = typer.Option(
    None,
    "--drop-iterations",
    rich_help_panel=COMPRESSION_PANEL,
    help=("Recovery fine-tune iterations after dropping (default: by budget; quick 2000, batch 64)."),
)
DROP_LR = typer.Option(
    None,
    "--drop-lr",
    rich_help_panel=COMPRESSION_PANEL,
    help=("Recovery fine-tune learning rate (SGD, default 0.02, x0.1 at 40 % of the iterations)."),
)
PRECISION = typer.Option(
    None,
    "--precision",
    rich_help_panel=COMPRESSION_PANEL,
    help=(
        "Hand on fp32, fp16, int8 or binary weights (default: the target's precision). int8 follows the target: "
        "TensorRT targets get symmetric S8S8 Q/DQ, the cpu target the format measured fastest on this CPU."
    ),
)
CALIB = build_option(
    "calib",
    "--calib",
    panel=COMPRESSION_PANEL,
    help=(
        "INT8 calibration (and binary KD) data: synthetic (the transfer set, data-free) or real (--images, unlabelled)."
    ),
)
CALIB_METHOD = build_option(
    "calib_method",
    "--calib-method",
    panel=COMPRESSION_PANEL,
    help=("INT8 activation ranges: minmax, entropy or percentile (99.999)."),
)
CALIB_IMAGES = build_option(
    "calib_images",
    "--calib-images",
    panel=COMPRESSION_PANEL,
    help=("Images used for INT8 calibration (as many again are held back for checking)."),
)
CALIB_IMAGES_DIR = typer.Option(
    None,
    "--images",
    rich_help_panel=COMPRESSION_PANEL,
    help=("Real images for --calib real: a folder (`DIR/CLASS/IMAGE`; labels unused) or fmnist-train."),
)
MAX_ACCURACY_DROP = build_option(
    "max_accuracy_drop",
    "--max-accuracy-drop",
    panel=COMPRESSION_PANEL,
    help=(
        "INT8: keep the most sensitive layers in float until the label-free estimate of the top-1 drop is at most "
        "this many points."
    ),
)
BINARY_ITERATIONS = typer.Option(
    None,
    "--binary-iterations",
    rich_help_panel=COMPRESSION_PANEL,
    help=("Binary weights: data-free KD iterations (batch 64; default by budget, quick 3000)."),
)
BINARY_COVERAGE = build_option(
    "binary_coverage",
    "--binary-coverage",
    panel=COMPRESSION_PANEL,
    help=(
        "Binary weights: the share of the binarisable weights made binary; the layers that lose most accuracy per "
        "weight (measured one at a time) keep their precision within the rest. 1.0 binarises every layer but the "
        "first and last."
    ),
)

# --- target and measurement ---
TARGET = build_option(
    "target",
    "--target",
    panel=TARGET_PANEL,
    help=("Deployment target: a name from `pipeline targets` (targets/*.toml), or the path of a target TOML file."),
)
HOST = typer.Option(
    None,
    "--host",
    rich_help_panel=TARGET_PANEL,
    help=(
        "user@device: measure latency (and build the TensorRT engine) on that machine over SSH, with the portable "
        "bench code (overrides the target's host). Without a host, a TensorRT target is measured here when TensorRT "
        "is installed, else by a labelled onnxruntime proxy."
    ),
)
EVAL = typer.Option(
    None,
    "--eval",
    rich_help_panel=TARGET_PANEL,
    help=(
        "Labelled set for accuracy: fmnist (the Fashion-MNIST test split, for reporting), fmnist-val (the last "
        "10,000 training images, for choosing settings), an image folder (`DIR/CLASS/IMAGE`), or none. Default: "
        "fmnist for the embedded teachers."
    ),
)

# --- output ---
OUT = typer.Option(
    None,
    "--out",
    "-o",
    rich_help_panel=OUTPUT_PANEL,
    help=(
        "Run folder (default `runs/TEACHER-TARGET`). Running the same command again resumes and skips finished stages."
    ),
)
FORCE = typer.Option(False, "--force", rich_help_panel=OUTPUT_PANEL, help="Run every stage again, even if up to date.")
JSON = typer.Option(
    False, "--json", rich_help_panel=OUTPUT_PANEL, help="Print a machine-readable JSON summary on stdout."
)
DEBUG = typer.Option(False, "--debug", rich_help_panel=OUTPUT_PANEL, help="Show full tracebacks.")
QUIET = typer.Option(False, "--quiet", "-q", rich_help_panel=OUTPUT_PANEL, help="No progress bars or status lines.")
PLAN = typer.Option(
    False,
    "--plan",
    rich_help_panel=OUTPUT_PANEL,
    help=("Print the resolved recipe (the stages that would run, their inputs and settings) and exit without running."),
)
