"""`pipeline report RUN`: the summary table of any run folder (markdown and CSV, via pandas) and its Pareto plot."""

from pathlib import Path

from pipeline.bundle.pareto import pareto_points, plot_pareto
from pipeline.errors import PipelineError
from pipeline.fileio import atomic_write_text
from pipeline.stage import RunFolder

COLUMNS = {
    "model": "model",
    "arch": "arch",
    "precision": "precision",
    "parameters": "parameters",
    "onnx_bytes": "ONNX bytes",
    "accuracy": "top-1",
    "eval_images": "eval images",
    "latency_median_ms": "latency median ms",
    "latency_p90_ms": "p90 ms",
    "latency_cv": "CV",
    "dropped_blocks": "dropped blocks",
}


def _markdown(frame) -> str:
    """A GitHub table without the optional `tabulate` dependency of DataFrame.to_markdown."""
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    cells = [
        "| " + " | ".join("" if value is None or value != value else str(value) for value in row) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([header, rule, *cells])


def write_report(run_root: Path, out: Path | None = None) -> dict:
    import pandas as pd

    from pipeline.run_view import summarize

    if not (Path(run_root) / "manifest.json").is_file():
        raise PipelineError(f"{run_root} is not a run folder (no manifest.json)")
    run = RunFolder(run_root)
    summary = summarize(run)
    out = Path(out) if out else run.root / "report"
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(summary["rows"]).reindex(columns=list(COLUMNS)).rename(columns=COLUMNS)
    if "dropped blocks" in frame:
        frame["dropped blocks"] = frame["dropped blocks"].map(lambda v: ", ".join(v) if isinstance(v, list) else v)
    frame.to_csv(out / "summary.csv", index=False)
    target = run.manifest.get("target", {}).get("name", "?")
    text = [
        f"# {run.root.name}",
        "",
        f"Target {target}; latency source: {summary.get('latency_source') or 'not measured'}.",
        "",
        _markdown(frame.round(4)),
        "",
        *[f"- {note}" for note in summary.get("notes", [])],
    ]
    atomic_write_text(out / "summary.md", "\n".join(text) + "\n")
    points = pareto_points(run.manifest)
    if points:
        plot_pareto(points, out / "pareto.png", title=run.root.name)
    return {
        "folder": str(out),
        "markdown": "\n".join(text),
        "pareto": str(out / "pareto.png") if points else None,
        "rows": len(frame),
    }
