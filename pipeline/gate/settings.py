"""The gate's settings and their defaults, declared once (light: `pipeline gate --help` shows them without
loading torch)."""

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class GateSettings:
    max_regression: float = 0.05  # fraction: 0.05 = the candidate may be up to 5 % slower
    rounds: int = 30  # alternating baseline/candidate rounds (one paired ratio each)
    runs: int = 200  # timed runs per model per round (a round's figure is their median)
    warmup: int = 20
    max_seconds: float = 0.5  # per model per round; at least 10 runs are always made
    confidence: float = 0.95
    strict_environment: bool = False  # refuse (exit 2) instead of warning when the environment differs

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def resolve(cls, target, **given) -> "GateSettings":
        """Each setting from the flag when given (not None), else the target file's [gate] table, else the
        default declared above."""
        from_target = {
            "max_regression": target.gate_max_regression,
            "rounds": target.gate_rounds,
            "runs": target.gate_runs,
        }
        chosen = {name: value for name, value in from_target.items() if value is not None}
        chosen.update({name: value for name, value in given.items() if value is not None})
        return cls(**chosen)
