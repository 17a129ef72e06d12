"""`--budget smoke|quick|full`: how much wall time and how many measurements each stage may spend."""

from dataclasses import asdict, dataclass

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

    def to_dict(self) -> dict:
        return asdict(self)


BUDGETS = {
    # smoke: exercises every code path in about a minute (tests, CI); its accuracy means nothing.
    "smoke": Budget("smoke", synthesize_seconds=5, distill_seconds=12, batch_size=32,
                    bench_warmup=5, bench_runs=30, eval_limit=1000),
    # quick: the default; the whole build stays under 15 minutes on 2 CPU cores.
    "quick": Budget("quick", synthesize_seconds=120, distill_seconds=600, batch_size=128,
                    bench_warmup=20, bench_runs=300, eval_limit=None),
    # full: the quality setting, about an hour on 2 CPU cores.
    "full": Budget("full", synthesize_seconds=600, distill_seconds=3000, batch_size=256,
                   bench_warmup=50, bench_runs=1000, eval_limit=None),
}


def get_budget(name: str) -> Budget:
    try:
        return BUDGETS[name]
    except KeyError:
        raise PipelineError(f"unknown budget {name!r}; choose one of {', '.join(BUDGETS)}") from None
