"""The search space and its cheap pruning.

A candidate is a base model (the teacher, or the distilled student), the blocks dropped from it (always a
prefix of that model's PRACTISE order: the block with the lowest recoverability cost per millisecond saved goes
first) and a precision. Its latency is first *predicted* from measurements made once: the block latency table
(savings add up closely enough, see benchmarks/results/blockdrop.md) and the per-precision speed-up of the full
model. Only candidates near the budget line are then fine-tuned and measured for real.
"""

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Candidate:
    base: str  # "teacher" or "student"
    dropped: tuple[str, ...]
    precision: str  # fp32 | fp16 | int8

    @property
    def name(self) -> str:
        return f"{self.base}-drop{len(self.dropped)}-{self.precision}"

    def describe(self) -> str:
        blocks = (
            f"{len(self.dropped)} block(s) dropped ({', '.join(self.dropped)})" if self.dropped else "no block dropped"
        )
        return f"{self.base}, {blocks}, {self.precision}"

    def to_dict(self) -> dict:
        return {**asdict(self), "dropped": list(self.dropped), "name": self.name}


def practise_order(table: dict, recoverability) -> list[dict]:
    """Every block, in the order PRACTISE would drop them: at each step the block with the lowest
    recoverability / saving, with savings from the latency table (measured once). `recoverability(dropped)`
    is the adapter-only probe's remaining feature error. Blocks that save nothing measurable go last."""
    savings = {row["block"]: row["saving_ms"] for row in table["blocks"]}
    order: list[dict] = []
    dropped: list[str] = []
    while len(dropped) < len(savings):
        remaining = [name for name in savings if name not in dropped]
        useful = [name for name in remaining if savings[name] > 0]
        if not useful:
            order.extend(
                {"block": name, "saving_ms": savings[name], "recoverability": None, "score": None} for name in remaining
            )
            break
        scored = [
            {"block": name, "saving_ms": savings[name], "recoverability": recoverability(dropped + [name])}
            for name in useful
        ]
        for row in scored:
            row["score"] = row["recoverability"] / row["saving_ms"]
        best = min(scored, key=lambda row: row["score"])
        order.append(best)
        dropped.append(best["block"])
    return order


def predicted_ms(full_ms: float, order: list[dict], count: int, speedup: float) -> float:
    """Latency of the base without its first `count` blocks in PRACTISE order, at a precision that runs the
    full model `speedup` times as fast as fp32 (the ratio is assumed to hold for the smaller model too)."""
    saved = sum(max(0.0, row["saving_ms"]) for row in order[:count])
    return max(full_ms - saved, 0.0) / speedup


def shortlist(bases: dict[str, dict], precisions: list[str], limit_ms: float, slack: float = 0.1) -> list[Candidate]:
    """For each base and precision: the fewest dropped blocks predicted to meet `limit_ms` (more drops only lose
    accuracy), one more block in case the prediction is optimistic, and one fewer when it is predicted within
    `slack` of the limit (in case it is pessimistic). `bases[name]` = {"full_ms", "order", "speedups"}."""
    chosen: list[Candidate] = []
    for base, info in bases.items():
        order, blocks = info["order"], [row["block"] for row in info["order"]]
        for precision in precisions:
            speedup = info["speedups"].get(precision)
            if speedup is None:
                continue
            counts = [k for k in range(len(blocks) + 1) if predicted_ms(info["full_ms"], order, k, speedup) <= limit_ms]
            if counts:
                first = counts[0]
                keep = {first, min(first + 1, len(blocks))}
                if first > 0 and predicted_ms(info["full_ms"], order, first - 1, speedup) <= limit_ms * (1 + slack):
                    keep.add(first - 1)
            else:  # predicted to miss even with every block gone: still measure the fastest, to say how close
                keep = {len(blocks)}
            chosen.extend(Candidate(base, tuple(blocks[:k]), precision) for k in sorted(keep))
    return chosen
