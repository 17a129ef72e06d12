"""Turn a finished run folder into a committed results file (JSON + Markdown table) with the
command, machine and library versions that produced it.

    python benchmarks/record_run.py runs/resnet20-fmnist-cpu --name foundation --wall-s 812 \
        --command "make demo"
"""

import argparse
import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

from pipeline.fileio import atomic_write_json, atomic_write_text
from pipeline.run_view import summarize
from pipeline.stage import RunFolder


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_folder", type=Path)
    parser.add_argument("--name", required=True, help="results file stem in benchmarks/results/")
    parser.add_argument("--wall-s", type=float, help="measured wall time of the whole command")
    parser.add_argument("--command", required=True, help="the command that produced the run folder")
    args = parser.parse_args()

    run = RunFolder(args.run_folder)
    summary = summarize(run)
    manifest = run.manifest
    rows = [{**row, "onnx": Path(row["onnx"]).name} for row in summary["rows"]]
    result = {
        "command": args.command,
        "pipeline_command": manifest.get("command"),
        "wall_s": args.wall_s,
        "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "gpu": None, "platform": platform.platform()},
        "budget": manifest.get("budget"),
        "target": manifest.get("target"),
        "eval": manifest.get("eval"),
        "stage_wall_s": {name: entry["wall_s"] for name, entry in manifest["stages"].items()},
        "versions": next(iter(manifest["stages"].values()))["versions"],
        "training_steps": {
            name: manifest["stages"][name]["metrics"].get(key)
            for name, key in (("synthesize", "steps"), ("distill", "steps"))
            if name in manifest["stages"]
        },
        "rows": rows,
    }
    out = Path(__file__).parent / "results"
    atomic_write_json(out / f"{args.name}.json", result)

    lines = [
        f"# {args.name}",
        "",
        f"Command: `{args.command}` (runs `{manifest.get('command')}`)",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, no GPU. "
        f"Recorded {result['recorded_at']}.",
        "",
    ]
    if args.wall_s:
        lines += [
            f"Whole command wall time: {args.wall_s:.0f} s. Stage wall times: "
            + ", ".join(f"{k} {v:.0f} s" for k, v in result["stage_wall_s"].items()),
            "",
        ]
    lines += [
        "| model | arch | parameters | ONNX bytes | top-1 | eval images | latency median ms | p90 ms | CV |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        accuracy = f"{row['accuracy'] * 100:.2f} %" if row["accuracy"] is not None else "—"
        lines.append(
            f"| {row['model']} | {row['arch']} | {row['parameters']:,} | {row['onnx_bytes']:,} | {accuracy} | "
            f"{row['eval_images']} | {row['latency_median_ms']:.3f} | {row['latency_p90_ms']:.3f} | "
            f"{row['latency_cv']:.2f} |"
        )
    lines += [
        "",
        "Latency: ONNX Runtime CPU, batch 1, threads as in the target; accuracy of the exported ONNX model.",
        "",
    ]
    atomic_write_text(out / f"{args.name}.md", "\n".join(lines))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
