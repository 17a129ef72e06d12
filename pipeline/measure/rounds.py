"""The one rounds policy of the timing protocol: a fixed minimum of interleaved rounds, then, where a decision is
waiting on the figures (the gate's verdict), more rounds until the interval that decision needs is clear of its
line or the time share is spent. A count that needs no decision (bench, block tables) is minimum == maximum."""

from dataclasses import dataclass

from pipeline.errors import PipelineError

MIN_ROUNDS = 20  # the project's floor for a timing claim


@dataclass(frozen=True)
class RoundsPolicy:
    minimum: int = MIN_ROUNDS
    maximum: int = MIN_ROUNDS
    max_seconds: float | None = None  # the time share for the whole measurement; the minimum is always made

    def __post_init__(self):
        if not 1 <= self.minimum <= self.maximum:
            raise PipelineError(f"rounds: need 1 <= minimum <= maximum, got {self.minimum} and {self.maximum}")

    @classmethod
    def fixed(cls, rounds: int) -> "RoundsPolicy":
        return cls(rounds, rounds)

    @classmethod
    def of(cls, rounds: "int | RoundsPolicy") -> "RoundsPolicy":
        return rounds if isinstance(rounds, RoundsPolicy) else cls.fixed(int(rounds))
