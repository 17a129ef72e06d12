"""The gate itself: measure baseline and candidate together, decide, explain; and write baselines.

A baseline is two files: `<name>.json` (what was measured, where, with which settings and environment) and the
model it describes, copied beside it (`<name>.onnx`), because a fair comparison re-measures both models now, on
this machine, interleaved: a number from another day or machine is never compared with one from today.
"""

import json
import shutil
import time
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.fileio import atomic_write_json, sha256_file
from pipeline.formats import format_fields, read_format
from pipeline.gate.environment import differences, environment
from pipeline.gate.settings import GateSettings
from pipeline.gate.stats import UNMEASURABLE, Verdict, decide, gate_question

BASELINE_KIND, BASELINE_VERSION = "latency-baseline", 1
MODEL_SUFFIXES = (".onnx", ".engine", ".plan")


def parse_regression(text: str) -> float:
    """'5%', '5 %', '0.05' -> 0.05."""
    value = str(text).strip()
    try:
        number = float(value.rstrip("%").strip())
    except ValueError:
        raise PipelineError(f"--max-regression must look like 5% or 0.05, not {text!r}") from None
    fraction = number / 100 if value.endswith("%") else number
    if not 0 <= fraction < 1:
        raise PipelineError(f"--max-regression must be between 0 % and 100 %, got {text!r}")
    return fraction


def resolve_model(path: Path) -> Path:
    """An ONNX file or engine as given; a run folder gives the model it hands on (quantised, else student)."""
    path = Path(path)
    if path.is_dir():
        if not (path / "manifest.json").is_file():
            raise PipelineError(f"{path} is not a run folder (no manifest.json): give an ONNX file or a run folder")
        from pipeline.run_view import RunView

        return RunView(path).handed_on().onnx
    if not path.is_file():
        raise PipelineError(f"model not found: {path}")
    if path.suffix not in MODEL_SUFFIXES:
        raise PipelineError(f"{path.name}: the gate measures {', '.join(MODEL_SUFFIXES)} files or run folders")
    return path


def _settings_for(target, gate: GateSettings):
    from pipeline.measure import target_latency_settings

    return target_latency_settings(
        target, warmup=gate.warmup, runs=gate.runs, rounds=gate.rounds, max_seconds=gate.max_seconds
    )


def measure_pair(baseline: Path, candidate: Path, target, gate: GateSettings) -> dict:
    """Both models in interleaved rounds on the target's runner (order shuffled each round): at least `rounds`,
    then more, up to `max_rounds`, while the verdict could still change (`gate_question`; on a remote host the
    device script asks it)."""
    from pipeline.measure import RoundsPolicy, example_input, time_onnx_models
    from pipeline.preprocess import preprocess_from_onnx

    if baseline.suffix == ".onnx" and candidate.suffix == ".onnx":
        base_shape = preprocess_from_onnx(baseline, None).input_shape
        preprocess = preprocess_from_onnx(candidate, None)
        if tuple(base_shape) != tuple(preprocess.input_shape):
            raise PipelineError(
                f"the candidate takes input {tuple(preprocess.input_shape)}, the baseline "
                f"{tuple(base_shape)}: they are different models, not a regression to measure"
            )
    else:
        raise PipelineError(
            "engines are gated on their device: give the ONNX files (the target's runner builds "
            "the engines), or run the gate where the engine was built"
        )
    settings = _settings_for(target, gate)
    return time_onnx_models(
        {"baseline": baseline, "candidate": candidate},
        settings,
        example_input(settings, preprocess),
        RoundsPolicy(gate.rounds, max(gate.rounds, gate.max_rounds)),
        label="gate: A/B rounds",
        enough=gate_question(gate),
    )


def read_baseline(path: Path) -> tuple[dict, Path]:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(
            f"baseline {path} does not exist: create it with `pipeline gate MODEL --baseline {path} --update-baseline`"
        )
    try:
        record = json.loads(path.read_text())
    except ValueError:
        raise PipelineError(f"baseline {path} is not valid JSON") from None
    record = read_format(
        record,
        BASELINE_KIND,
        BASELINE_VERSION,
        what=f"baseline {path}",
        fix=f"write a new one with `pipeline gate MODEL --baseline {path} --update-baseline`",
    )
    model = path.parent / record["model_file"]
    if not model.is_file():
        raise PipelineError(f"the baseline's model {model} is missing (it is kept beside {path.name})")
    if sha256_file(model) != record["model_sha256"]:
        raise PipelineError(f"the baseline's model {model} was changed after the baseline was written")
    return record, model


def write_baseline(model: Path, path: Path, target, gate: GateSettings) -> dict:
    """Copy the model beside `path` and record it, with the environment and one measurement of it alone."""
    from pipeline.measure import example_input, time_onnx_models
    from pipeline.preprocess import preprocess_from_onnx

    model = resolve_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = path.with_suffix(model.suffix)
    if model.resolve() != kept.resolve():
        temporary = kept.with_name(f".{kept.name}.tmp")
        shutil.copyfile(model, temporary)
        temporary.replace(kept)
    settings = _settings_for(target, gate)
    timed = time_onnx_models(
        {"baseline": kept},
        settings,
        example_input(settings, preprocess_from_onnx(kept, None)),
        gate.rounds,
        label="gate: measuring the new baseline",
    )["baseline"]
    record = {
        **format_fields(BASELINE_KIND, BASELINE_VERSION),
        "model_file": kept.name,
        "model_sha256": sha256_file(kept),
        "source_model": str(model),
        "target": target.to_dict(),
        "settings": gate.to_dict(),
        "environment": environment(settings.runtime, settings.threads),
        "latency_source": settings.source,
        "median_ms": timed["median_ms"],
        "round_medians_ms": timed["round_medians_ms"],
        "cv": timed["cv"],
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(path, record)
    return record


def run_gate(candidate: Path, baseline_path: Path, target, gate: GateSettings) -> dict:
    """Measure, decide and explain. Never raises for a measurement problem: the report says UNMEASURABLE."""
    started = time.monotonic()
    report = {
        "candidate": str(candidate),
        "baseline": str(baseline_path),
        "target": target.name,
        "settings": gate.to_dict(),
        "warnings": [],
    }
    from pipeline.measure import latency_record, onnx_flops

    try:
        record, baseline_model = read_baseline(baseline_path)
        candidate = resolve_model(candidate)
        report["candidate"] = str(candidate)
        settings = _settings_for(target, gate)
        now = environment(settings.runtime, settings.threads)
        changed = differences(record["environment"], now)
        report.update(environment=now, environment_differences=changed, latency_source=settings.source)
        if changed:
            message = "environment differs from the baseline's: " + "; ".join(changed)
            if gate.strict_environment:
                raise PipelineError(message + " (--strict-environment): write a new baseline here")
            report["warnings"].append(message + " (both models are re-measured here, so the ratio still holds)")
        if settings.source == "proxy":
            report["warnings"].append(f"latency by proxy: onnxruntime here stands in for {settings.proxy_for}")
        timed = measure_pair(baseline_model, candidate, target, gate)
        verdict = decide(
            timed["baseline"]["round_medians_ms"],
            timed["candidate"]["round_medians_ms"],
            gate.max_regression,
            confidence=gate.confidence,
        )
        report.update(
            baseline_ms=timed["baseline"]["median_ms"],
            candidate_ms=timed["candidate"]["median_ms"],
            baseline_round_medians_ms=timed["baseline"]["round_medians_ms"],
            candidate_round_medians_ms=timed["candidate"]["round_medians_ms"],
            in_round_cv={k: v["cv"] for k, v in timed.items()},
            measured_on=timed["candidate"].get("measured_on"),
            latency={  # the measurement layer's one record per model (LATENCY_RECORD_KEYS)
                "baseline": latency_record(timed["baseline"], settings, flops=onnx_flops(baseline_model)),
                "candidate": latency_record(timed["candidate"], settings, flops=onnx_flops(candidate)),
            },
        )
    except PipelineError as error:
        verdict = Verdict(
            UNMEASURABLE, float("nan"), float("nan"), float("nan"), gate.confidence, gate.max_regression, 0, str(error)
        )
    report["verdict"] = verdict.to_dict()
    report["exit_code"] = verdict.status
    report["gate_seconds"] = round(time.monotonic() - started, 2)
    return report


def explain(report: dict) -> str:
    """One screen for a CI log: the verdict first, then the numbers behind it."""
    verdict = report["verdict"]
    lines = [f"latency gate: {verdict['label'].upper()} (exit {report['exit_code']}) — {verdict['reason']}"]
    if "baseline_ms" in report:
        measured = report.get("measured_on") or {}
        lines += [
            f"  target      {report['target']}: {measured.get('runtime')} {measured.get('version') or ''}, "
            f"{report['latency_source']} measurement, {verdict['rounds']} interleaved rounds",
            f"  baseline    {report['baseline_ms']:.4f} ms median  ({report['baseline']})",
            f"  candidate   {report['candidate_ms']:.4f} ms median  ({report['candidate']})",
            f"  ratio       {verdict['ratio']:.4f}  ({100 * verdict['confidence']:.0f} % interval {verdict['low']:.4f} … "
            f"{verdict['high']:.4f}); regression = interval above 1 and ratio above {1 + verdict['max_regression']:.4f}",
            f"  noise       in-round CV baseline {report['in_round_cv']['baseline']:.3f}, candidate "
            f"{report['in_round_cv']['candidate']:.3f}",
        ]
    lines += [f"  warning     {w}" for w in report.get("warnings", [])]
    lines.append(f"  took        {report['gate_seconds']:.1f} s")
    return "\n".join(lines)
