"""The on-device acceptance report (issue 23, docs/ON_DEVICE.md): what a user runs against their Jetson or GPU box
and sends back as one JSON, and the check `pipeline verify REPORT.json` makes of it.

`pipeline accept --target T --host H` runs, on the device over SSH: the doctor's probe (what is installed there),
`pipeline bench` of the embedded ResNet-20 teacher (the engine built there and timed in interleaved rounds), and
the engine stage for its fp32 ONNX (a precision every TensorRT major can build from an fp32 file, asked for even
where the target deploys only fp16 and int8). The report
keeps each one's record and the target's TensorRT facts it is judged against; the check lists every reason the
figures are not what the target promises (a fallback runtime, a TensorRT outside its releases, a proxy figure)."""

import time
from pathlib import Path

from pipeline import __version__
from pipeline.doctor import doctor
from pipeline.errors import PipelineError
from pipeline.formats import format_fields, read_format
from pipeline.recipes.single_model import run_bench_only
from pipeline.targets import load_target
from pipeline.teacher_spec import TeacherSpec
from pipeline.versions import tensorrt_accepted

REPORT_KIND, REPORT_VERSION = "on-device-report", 1
DEVICE_RUNTIMES = ("tensorrt", "trtexec")  # what a TensorRT target's figures must come from


def acceptance_report(target_name: str, host: str | None, out: Path) -> dict:
    target = load_target(target_name).with_host(host)
    if not target.is_remote:
        raise PipelineError("the acceptance report is measured on the device: give --host user@device")
    if target.runtime != "tensorrt":
        raise PipelineError(
            f"target {target.name} runs {target.runtime}: the acceptance report is for TensorRT targets"
        )
    diagnosis = doctor(target)
    bench = run_bench_only(
        None,
        spec=TeacherSpec(),
        target_name=target_name,
        budget_name="smoke",
        out=out / "bench",
        eval_spec="none",
        host=host,
    )
    engine = _fp32_engine(Path(bench["onnx"]), target, out / "engine")
    trt = target.tensorrt
    return {
        **format_fields(REPORT_KIND, REPORT_VERSION),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pipeline_version": __version__,
        "target": target.name,
        "host": target.host,
        "tensorrt_wanted": {"min": trt.min_version, "max": trt.max_version, "releases": list(trt.releases)},
        "doctor": {key: diagnosis[key] for key in ("device", "uses", "missing")},
        "bench": {key: bench.get(key) for key in ("latency", "latency_source", "measured_on", "runtime", "onnx")},
        "engine": {key: engine.get(key) for key in ("built", "built_on", "reason", "stamp", "latency_ms_on_device")},
    }


def _fp32_engine(onnx: Path, target, out: Path) -> dict:
    """The engine stage for the fp32 ONNX on the device, whatever precisions the target deploys in (the AGX Orin
    lists fp16 and int8 only): what is accepted here is that the device builds and runs an engine at all."""
    from pipeline.engine.stage import EngineStage
    from pipeline.preprocess import preprocess_from_onnx
    from pipeline.recipes.stage_specs import engine_config
    from pipeline.stage import RunFolder

    config = engine_config(target, "fp32", preprocess_from_onnx(onnx, None).input_shape)
    entry = RunFolder(out).run(EngineStage(onnx, config, previous_cache=out / "engine" / "timing.cache"))
    return entry["metrics"]


def report_problems(report: dict) -> list[str]:
    """Every reason the report's figures are not the target's, in one line each (empty: accepted)."""
    read_format(report, REPORT_KIND, REPORT_VERSION, what="the on-device report", fix="run `pipeline accept` again")
    problems = [f"doctor: {line}" for line in report["doctor"].get("missing", [])]
    latency = report["bench"].get("latency") or {}
    if report["bench"].get("latency_source") != "remote":
        problems.append(f"bench: latency is {report['bench'].get('latency_source')}, not measured on the device")
    used = latency.get("runtime_used")
    if used not in DEVICE_RUNTIMES:
        problems.append(
            f"bench: latency was measured with {used}, not TensorRT: these are not {report['target']} figures"
        )
    engine = report["engine"]
    if not engine.get("built"):
        problems.append(f"engine: not built on the device ({engine.get('reason')})")
    else:
        stamp, wanted = engine.get("stamp") or {}, report["tensorrt_wanted"]
        version = str(stamp.get("tensorrt_version"))
        if not tensorrt_accepted(version, wanted["min"], wanted["max"], wanted["releases"]):
            problems.append(f"engine: built with TensorRT {version}, outside what {report['target']} lists")
        if stamp.get("precision") not in (None, "fp32") or stamp.get("precision_note"):
            problems.append(f"engine: {stamp.get('precision_note') or 'built in ' + str(stamp.get('precision'))}")
    return problems
