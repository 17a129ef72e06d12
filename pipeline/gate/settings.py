"""The gate's settings and their defaults, declared once (light: `pipeline gate --help` shows them without
loading torch)."""

from dataclasses import asdict, dataclass

from pipeline.layered import resolve


@dataclass(frozen=True)
class GateSettings:
    max_regression: float = 0.05  # fraction: 0.05 = the candidate may be up to 5 % slower
    # alternating baseline/candidate rounds (one paired ratio each): at least `rounds` (the project's floor for a
    # timing claim), then more, up to `max_rounds`, only while the verdict is not clear (measure/rounds.py)
    rounds: int = 20
    max_rounds: int = 60
    runs: int = 200  # timed runs per model per round (a round's figure is their median)
    warmup: int = 20
    max_seconds: float = 0.5  # per model per round; at least 10 runs are always made
    confidence: float = 0.95
    strict_environment: bool = False  # refuse (exit 2) instead of warning when the environment differs

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def resolve(cls, target, **given) -> "GateSettings":
        """Each setting from the flag when given (not None), else the target file's [gate] table (where it has
        one), else the default declared above (pipeline/layered.py)."""
        defaults = asdict(cls())
        unknown = set(given) - set(defaults)
        if unknown:
            raise TypeError(f"not gate settings: {', '.join(sorted(unknown))}")
        return cls(
            **{
                name: resolve(
                    default, (f"target {target.name}", getattr(target.gate, name, None)), ("flag", given.get(name))
                ).value
                for name, default in defaults.items()
            }
        )
