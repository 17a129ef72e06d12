"""Why every onnxruntime session stops its workers spinning between runs (portable/onnxruntime_loader.py).

The embedded ResNet-20 teacher is timed in the measurement layer's interleaved rounds (random order each round,
3 warm-up calls and 30 timed runs per model per round, threads 2), as the only session and beside 9 other
sessions of the same model, with onnxruntime's default (idle workers spin after a run) and with
`session.force_spinning_stop`. A session whose figure depends on which session ran before it shows as a wide
spread of round medians (p10 to p90).

    python benchmarks/ort_spinning.py      # -> benchmarks/results/ort_spinning.{json,md}
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from datafree import cpu_name  # noqa: E402

from pipeline.fileio import atomic_write_json, atomic_write_text  # noqa: E402
from pipeline.portable.timing import interleaved_rounds  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
ROUNDS, WARMUP, RUNS, THREADS = 24, 3, 30, 2


def session(path: Path, stop_spinning: bool):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if stop_spinning:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def timer(sess, example: np.ndarray):
    feed = {sess.get_inputs()[0].name: example}

    def run() -> list[float]:
        for _ in range(WARMUP):
            sess.run(None, feed)
        times = []
        for _ in range(RUNS):
            start = time.perf_counter()
            sess.run(None, feed)
            times.append((time.perf_counter() - start) * 1e3)
        return times

    return run


def main() -> None:
    import onnxruntime as ort

    from pipeline.assets import embedded_teacher_path
    from pipeline.export import export_onnx
    from pipeline.models.load import load_model

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    teacher = load_model(embedded_teacher_path("resnet20-fmnist"))
    example = np.random.default_rng(0).random((1, *teacher.input_shape), dtype=np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "resnet20.onnx"
        export_onnx(teacher.model, teacher.preprocess, path, exporter="timing")
        for stop_spinning in (False, True):
            for sessions in (1, 10):
                timers = {f"s{i}": timer(session(path, stop_spinning), example) for i in range(sessions)}
                timed = interleaved_rounds(timers, ROUNDS)
                medians = [m for entry in timed.values() for m in entry["round_medians_ms"]]
                p10, p50, p90 = np.percentile(medians, [10, 50, 90])
                rows.append(
                    {
                        "model": "resnet20-fmnist (embedded teacher, 28 px)",
                        "spinning_between_runs": not stop_spinning,
                        "sessions": sessions,
                        "rounds": ROUNDS,
                        "round_median_p10_ms": round(float(p10), 4),
                        "round_median_p50_ms": round(float(p50), 4),
                        "round_median_p90_ms": round(float(p90), 4),
                        "spread": round(float((p90 - p10) / p50), 3),
                        "runtime": f"onnxruntime {ort.__version__} (CPU, local, threads {THREADS})",
                        "commit": commit.stdout.strip(),
                        "cpu": cpu_name(),
                    }
                )
                print(rows[-1], flush=True)
    atomic_write_json(RESULTS / "ort_spinning.json", {"command": "python benchmarks/ort_spinning.py", "rows": rows})
    lines = [
        "# Idle onnxruntime workers spinning between runs, in interleaved rounds",
        "",
        "`python benchmarks/ort_spinning.py`: the embedded ResNet-20 (28 px), round medians over "
        f"{ROUNDS} interleaved rounds of {WARMUP} warm-up + {RUNS} timed runs per session.",
        "",
        "| spinning between runs | sessions | p10 ms | p50 ms | p90 ms | (p90-p10)/p50 | runtime | commit | CPU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {'yes (default)' if row['spinning_between_runs'] else 'no (force_spinning_stop)'} | {row['sessions']} "
            f"| {row['round_median_p10_ms']} | {row['round_median_p50_ms']} | {row['round_median_p90_ms']} "
            f"| {row['spread']} | {row['runtime']} | {row['commit']} | {row['cpu']} |"
        )
    atomic_write_text(RESULTS / "ort_spinning.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
