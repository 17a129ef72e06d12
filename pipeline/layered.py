"""Defaults < budget < target file < flags, written once. Each setting a budget, a target file or a flag can
give is resolved by `resolve`; the result keeps where its value came from, so `--plan` can say. A layer gives a
setting only when its value is not None: the CLI passes None for every option the user did not type."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Resolved:
    value: object
    source: str  # "default", "budget quick", "target cpu", "flag"

    def to_dict(self) -> dict:
        return {"value": self.value, "from": self.source}


def resolve(default, *layers: tuple[str, object]) -> Resolved:
    """The last layer that gives a value (not None) wins; none: the default."""
    chosen = Resolved(default, "default")
    for source, value in layers:
        if value is not None:
            chosen = Resolved(value, source)
    return chosen
