"""`--budget smoke|quick|full`: how much wall time and how many measurements each stage may spend."""

from dataclasses import asdict, dataclass, replace

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class Budget:
    name: str
    synthesize_seconds: float  # generator pre-training
    distill_seconds: float  # joint generator/student training
    batch_size: int
    bench_warmup: int
    bench_runs: int
    eval_limit: int | None  # labelled images used for accuracy (None = the whole test split)
    curve_every_s: float = 0.0  # distill: student accuracy on the labelled set every N budget seconds (0 = off)
    # drop: recovery fine-tune iterations, adapter steps per recoverability probe, latency-table rounds
    drop_iterations: int = 2000
    drop_adapter_steps: int = 60
    # many short interleaved rounds beat a few long ones: background bursts last about a second and would
    # otherwise land on one variant's whole measurement (with 5 rounds x 1 s the savings summed to more than the model)
    drop_latency_rounds: int = 50
    drop_latency_runs: int = 100  # timed runs per variant per round
    # drop: wall time for the recoverability probes and the recovery fine-tune together (the latency table has
    # its own share); a bound beside the iterations and steps above, which a 28-px model meets long before it
    # and a 224-px one on a CPU does not (one fine-tune iteration there costs seconds). `--steps` lifts it
    drop_seconds: float = 360
    # synthesis when no distill stage follows and the transfer set is the training data (`pipeline drop`,
    # binary weights from the teacher): more and later images recover more (drop: 80k vs 20k images, +0.27 pt)
    standalone_synthesize_seconds: float = 300
    # quantize: binary-weight KD iterations (batch 64); interleaved rounds when timing formats against fp32
    binary_iterations: int = 3000
    # quantize: wall time for binary-weight KD, a bound beside its iterations that the embedded ResNet-20 meets
    # (its 3,000 were a 521 s quantize stage in benchmarks/results/quantize.md) and a 224-px model on a CPU does
    # not (an iteration there costs seconds, like drop's fine-tune). `--steps` lifts it
    binary_seconds: float = 600
    quantize_latency_rounds: int = 20
    # the whole build, probes and measurement included: when the plan says the stages would take longer, the
    # time-bounded ones (synthesize, distill, the probes and fine-tunes of drop or search) get a smaller share (recipes/fit.py)
    total_seconds: float = 900
    # the planner may follow another recipe when this one cannot deliver (recipes/deliver.py); smoke exercises
    # the command's own recipe, whose accuracy means nothing there anyway
    plans_for_quality: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


BUDGETS = {
    # smoke: exercises every code path in about a minute (tests, CI); its accuracy means nothing.
    "smoke": Budget(
        "smoke",
        synthesize_seconds=5,
        distill_seconds=12,
        batch_size=32,
        bench_warmup=5,
        bench_runs=30,
        eval_limit=1000,
        drop_iterations=20,
        drop_adapter_steps=3,
        drop_latency_rounds=6,
        drop_latency_runs=30,
        drop_seconds=30,
        binary_iterations=20,
        binary_seconds=20,
        quantize_latency_rounds=3,
        standalone_synthesize_seconds=5,
        total_seconds=90,
        plans_for_quality=False,
    ),
    # quick: the default; the whole build stays under 15 minutes on 2 CPU cores. Most of it goes to distill,
    # where the synthesizer keeps learning too but the student also learns (synthesize alone trains no student).
    "quick": Budget(
        "quick",
        synthesize_seconds=60,
        distill_seconds=780,
        batch_size=128,
        bench_warmup=20,
        bench_runs=300,
        eval_limit=None,
        curve_every_s=60,
    ),
    # full: the quality setting, about an hour on 2 CPU cores.
    "full": Budget(
        "full",
        synthesize_seconds=600,
        distill_seconds=3000,
        batch_size=256,
        bench_warmup=50,
        bench_runs=1000,
        eval_limit=None,
        curve_every_s=300,
        drop_iterations=8000,
        drop_adapter_steps=120,
        drop_latency_rounds=100,
        drop_seconds=1800,
        binary_iterations=8000,
        binary_seconds=1800,
        quantize_latency_rounds=50,
        standalone_synthesize_seconds=900,
        total_seconds=3600,
    ),
}


def get_budget(name: str) -> Budget:
    """A named budget, or a duration ('30m', '900s', '1.5h') for the data-free training, split as in `quick`."""
    if name in BUDGETS:
        return BUDGETS[name]
    seconds = parse_duration(name)
    if seconds is None:
        raise PipelineError(f"unknown budget {name!r}; choose one of {', '.join(BUDGETS)} or a duration such as 30m")
    quick = BUDGETS["quick"]
    # every time share as in `quick`, relative to its data-free training; the build around the training
    # (export, bench) gets the share on top that it has there
    scale = seconds / (quick.synthesize_seconds + quick.distill_seconds)
    shares = (
        "synthesize_seconds",
        "distill_seconds",
        "standalone_synthesize_seconds",
        "drop_seconds",
        "binary_seconds",
        "total_seconds",
    )
    return replace(
        quick,
        name=name,
        curve_every_s=max(30.0, seconds / 15),
        **{field: round(getattr(quick, field) * scale, 1) for field in shares},
    )


def parse_duration(text: str) -> float | None:
    units = {"s": 1, "m": 60, "h": 3600}
    text = text.strip().lower()
    if len(text) < 2 or text[-1] not in units:
        return None
    try:
        value = float(text[:-1]) * units[text[-1]]
    except ValueError:
        return None
    return value if value > 0 else None
