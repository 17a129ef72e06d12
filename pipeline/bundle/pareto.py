"""Accuracy vs latency of the teacher and every stage's model that a run measured, with its Pareto front."""

from pathlib import Path


def pareto_points(manifest: dict) -> list[dict]:
    """(name, latency ms, accuracy) from the run's own measurements; points without both are left out."""
    stages = manifest["stages"]
    bench = stages.get("bench", {}).get("metrics", {})
    points = []
    for name, entry in bench.items():
        if entry.get("accuracy") is not None and entry.get("latency"):
            points.append(
                {
                    "name": name if name != "student" else "handed on",
                    "latency_ms": entry["latency"]["median_ms"],
                    "accuracy": entry["accuracy"],
                    "source": "bench",
                }
            )
    quantize = stages.get("quantize", {}).get("metrics", {})
    if quantize.get("accuracy_fp32") is not None and quantize.get("latency_fp32_ms"):
        points.append(
            {
                "name": "before quantize (fp32)",
                "latency_ms": quantize["latency_fp32_ms"],
                "accuracy": quantize["accuracy_fp32"],
                "source": "quantize",
            }
        )
    return points


def pareto_front(points: list[dict]) -> list[dict]:
    """Points no other point beats on both latency (lower) and accuracy (higher), fastest first."""
    front = [
        p
        for p in points
        if not any(
            q["latency_ms"] <= p["latency_ms"]
            and q["accuracy"] >= p["accuracy"]
            and q is not p
            and (q["latency_ms"], q["accuracy"]) != (p["latency_ms"], p["accuracy"])
            for q in points
        )
    ]
    return sorted(front, key=lambda p: p["latency_ms"])


def plot_pareto(points: list[dict], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    for point in points:
        axes.scatter(point["latency_ms"], 100 * point["accuracy"], s=40)
        axes.annotate(
            point["name"],
            (point["latency_ms"], 100 * point["accuracy"]),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=8,
        )
    front = pareto_front(points)
    axes.plot(
        [p["latency_ms"] for p in front],
        [100 * p["accuracy"] for p in front],
        "--",
        color="grey",
        linewidth=1,
        label="Pareto front",
    )
    axes.set_xlabel("latency, median ms (the run's target)")
    axes.set_ylabel("top-1 accuracy, %")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=8)
    figure.tight_layout()
    # fixed metadata: the same points give the same bytes (bundles are hashed)
    figure.savefig(path, metadata={"Software": None})
    plt.close(figure)
