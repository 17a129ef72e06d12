"""What the search leaves for people: pareto.csv (every candidate, predicted and measured), a PNG of the front
with the budget line and the chosen point, and one paragraph saying why that point."""

import csv
import io
from pathlib import Path

from pipeline.fileio import atomic_write_bytes, atomic_write_text
from pipeline.search.space import Candidate, predicted_ms

COLUMNS = (
    "candidate",
    "base",
    "precision",
    "blocks_dropped",
    "dropped",
    "predicted_ms",
    "shortlisted",
    "measured_ms",
    "meets_budget",
    "estimated_accuracy_vs_teacher",
    "agreement",
    "accuracy",
)


def write_front(rows: list[dict], chosen: dict, limit_ms: float, csv_path: Path, png_path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*COLUMNS, "chosen"], extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**{k: _cell(row.get(k)) for k in COLUMNS}, "chosen": row["candidate"] == chosen["name"]})
    atomic_write_text(csv_path, buffer.getvalue())
    atomic_write_bytes(png_path, _plot(rows, chosen, limit_ms))


def _cell(value):
    return f"{value:.6g}" if isinstance(value, float) else value


def _plot(rows: list[dict], chosen: dict, limit_ms: float) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in rows if r["shortlisted"]]
    uses_real = all(r.get("accuracy") is not None for r in measured)
    key = "accuracy" if uses_real else "estimated_accuracy_vs_teacher"
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=100)
    for precision, marker in (("fp32", "o"), ("fp16", "s"), ("int8", "^")):
        points = [r for r in measured if r["precision"] == precision]
        if points:
            axes.scatter(
                [r["measured_ms"] for r in points], [100 * r[key] for r in points], marker=marker, s=40, label=precision
            )
            for r in points:
                axes.annotate(
                    f"{r['base'][0]}-{r['blocks_dropped']}",
                    (r["measured_ms"], 100 * r[key]),
                    textcoords="offset points",
                    xytext=(4, 3),
                    fontsize=7,
                )
    axes.axvline(limit_ms, color="red", linestyle="--", linewidth=1, label=f"budget {limit_ms:.3f} ms")
    chosen_y = chosen.get("accuracy") if uses_real else 1 - chosen["expected_loss_vs_teacher"]
    axes.scatter(
        [chosen["latency_ms"]],
        [100 * chosen_y],
        s=200,
        facecolors="none",
        edgecolors="black",
        linewidths=1.5,
        label=f"chosen: {chosen['name']}",
    )
    axes.set_xlabel("measured latency (ms)")
    axes.set_ylabel("top-1 on the labelled set (%)" if uses_real else "estimated top-1 relative to the teacher (%)")
    axes.set_title("budget search: the short list (label t-N / s-N: teacher / student, N blocks dropped)", fontsize=9)
    axes.legend(fontsize=7)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def explain(chosen: dict, records: dict, limit_ms: float, budget: str, latency, margin: float = 0.0) -> str:
    """One paragraph: the choice, its measured latency against the budget, and what it beat and why."""
    where = (
        f"{latency.runtime} as a proxy for {latency.proxy_for}"
        if latency.source == "proxy"
        else f"{latency.runtime} on {latency.host}"
        if latency.source == "remote"
        else f"{latency.runtime} here"
    )
    candidate = chosen["candidate"]
    others = [r for r in records.values() if r is not chosen]
    missed = [r for r in others if not r["meets_budget"]]
    beaten = [r for r in others if r["meets_budget"]]
    text = (
        f"Chosen: {candidate.describe()}. Measured {chosen['latency_ms']:.3f} ms against a budget of {budget} "
        f"({limit_ms:.3f} ms; {where}), {100 * chosen['reduction_vs_teacher']:.1f} % below the teacher timed beside "
        f"it (a candidate must beat the budget by {100 * margin:.0f} %, since another session may measure it slower). Its label-free estimate is {100 * (1 - chosen['expected_loss_vs_teacher']):.2f} % of the teacher's top-1 "
        f"(expected loss on {chosen['held_out_images']} held-back synthetic images no fine-tune saw), the best of the "
        f"{len(beaten) + 1} short-listed models that met the budget"
    )
    if beaten:
        runner_up = min(beaten, key=lambda r: r["expected_loss_vs_teacher"])
        text += (
            f"; the next best, {runner_up['candidate'].describe()}, estimates "
            f"{100 * (1 - runner_up['expected_loss_vs_teacher']):.2f} % at {runner_up['latency_ms']:.3f} ms"
        )
    if missed:
        text += (
            f". {len(missed)} other candidate(s) missed the budget (with its margin) when measured "
            f"(e.g. {missed[0]['candidate'].describe()}: {missed[0]['latency_ms']:.3f} ms)"
        )
    if chosen.get("accuracy") is not None:
        text += f". On the labelled set it scores {100 * chosen['accuracy']:.2f} % (measured after the choice, not used by it)"
    return text + "."


def predicted_rows(facts: dict, precisions, limit_ms: float, records: dict) -> list[dict]:
    """Every candidate of the space with its predicted latency, and what was measured for the short list."""
    rows = []
    for base, info in facts.items():
        blocks = [row["block"] for row in info["order"]]
        for precision in precisions:
            for count in range(len(blocks) + 1):
                candidate = Candidate(base, tuple(blocks[:count]), precision)
                record = records.get(candidate.name, {})
                rows.append(
                    {
                        "candidate": candidate.name,
                        "base": base,
                        "dropped": " ".join(candidate.dropped),
                        "blocks_dropped": count,
                        "precision": precision,
                        "predicted_ms": predicted_ms(
                            info["full_ms"], info["order"], count, info["speedups"][precision]
                        ),
                        "shortlisted": bool(record),
                        "measured_ms": record.get("latency_ms"),
                        "estimated_accuracy_vs_teacher": (1 - record["expected_loss_vs_teacher"]) if record else None,
                        "agreement": record.get("agreement"),
                        "accuracy": record.get("accuracy"),
                        "meets_budget": record.get("meets_budget"),
                    }
                )
    return rows
