"""One typed view over a run folder's manifest, so "which model does this run hand on, how fast, how accurate,
measured where?" has one answer for build's summary, the gate, the bundle, the report and the engine."""

from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.stage import RunFolder

# the exported models in the order that decides which one a run hands on (before quantisation):
# a build's student, `pipeline bench`'s model, or the teacher itself (`pipeline quantize`)
EXPORT_ROLES = ("student", "model", "teacher")


@dataclass(frozen=True)
class HandedOn:
    onnx: Path  # the file to deploy: quantize/model.onnx when the run quantised, else the exported model
    role: str  # which exported model it is (or came from): student, model or teacher
    precision: str
    fp32_onnx: Path  # the exported float model it came from (the same file when not quantised)
    bench: dict | None  # the bench stage's figures of the deployed file (latency, accuracy, where measured)
    accuracy_fp32: float | None  # the float model's accuracy, as the quantize stage measured it


class RunView:
    def __init__(self, run: RunFolder | Path):
        self.run = run if isinstance(run, RunFolder) else RunFolder(run)
        self.root, self.manifest = self.run.root, self.run.manifest
        self.stages = self.manifest["stages"]

    def metrics(self, stage: str) -> dict:
        return self.stages.get(stage, {}).get("metrics") or {}

    def handed_on(self) -> HandedOn:
        export = self.stages.get("export", {}).get("artifacts", {})
        role = next((name for name in EXPORT_ROLES if name in export), None)
        if role is None:
            raise PipelineError(f"{self.root} has no exported model: run `pipeline build` (or export) first")
        fp32 = self.root / export[role]["path"]
        bench, quantize = self.metrics("bench"), self.stages.get("quantize")
        if quantize and quantize.get("status") == "done":
            return HandedOn(
                self.root / quantize["artifacts"]["model"]["path"],
                role,
                quantize["metrics"]["precision"],
                fp32,
                bench.get("student"),
                quantize["metrics"].get("accuracy_fp32"),
            )
        return HandedOn(fp32, role, "fp32", fp32, bench.get(role), None)

    def dropped_blocks(self) -> list[str] | None:
        drop, search = self.metrics("drop"), self.metrics("search")
        return drop["dropped_blocks"] if drop else search["chosen"]["dropped"] if search else None

    def latency_source(self) -> str | None:
        return next((entry.get("latency_source") for entry in self.metrics("bench").values()), None)


def summarize(run: RunFolder) -> dict:
    """Teacher and handed-on model side by side: accuracy, size, latency (from the manifest). The "student" row
    is the handed-on model: quantised when the quantize stage ran (then possibly the quantised teacher itself)."""
    view = RunView(run)
    export, bench = view.metrics("export"), view.metrics("bench")
    rows = []
    for name in ("teacher", "student"):
        source = name if name in export else "teacher" if name == "student" and view.metrics("quantize") else None
        if source is None:
            continue
        row = {
            "model": name,
            "arch": export[source].get("name") or export[source].get("arch"),  # an unregistered model: its class
            "parameters": export[source].get("parameters"),
            "precision": "fp32",
            "onnx_bytes": export[source].get("size_bytes"),
            "onnx": str(run.root / f"export/{source}.onnx"),
        }
        if name == "student" and view.metrics("quantize"):
            handed_on = view.handed_on()
            row.update(
                precision=handed_on.precision,
                onnx_bytes=view.metrics("quantize")["size_bytes"],
                onnx=str(handed_on.onnx),
            )
        latency = bench.get(name, {}).get("latency", {})
        row.update(
            accuracy=bench.get(name, {}).get("accuracy"),
            eval_images=bench.get(name, {}).get("eval_images"),
            latency_median_ms=latency.get("median_ms"),
            latency_p90_ms=latency.get("p90_ms"),
            latency_cv=latency.get("cv"),
        )
        if name == "student" and view.dropped_blocks() is not None:
            row["dropped_blocks"] = view.dropped_blocks()
        rows.append(row)
    return {
        "run_folder": str(run.root),
        "manifest": str(run.manifest_path),
        "rows": rows,
        "latency_source": view.latency_source(),
        "notes": run_notes(run),
        "stages": {name: {"wall_s": entry.get("wall_s")} for name, entry in view.stages.items()},
    }


def run_notes(run: RunFolder) -> list[str]:
    """What the table does not say: where latency was measured, and whether an engine exists."""
    stages = run.manifest["stages"]
    notes = []
    search = stages.get("search", {}).get("metrics")
    if search:
        notes.append(f"budget search: {search['explanation']} Front: {run.root / 'search' / 'pareto.png'}")
    bench = stages.get("bench", {}).get("metrics", {})
    first = next(iter(bench.values()), {})
    drop = stages.get("drop", {}).get("metrics") or stages.get("search", {}).get("metrics") or {}
    sources = {first.get("latency_source"), drop.get("latency_source")} - {None}
    if "proxy" in sources:
        target = run.manifest.get("target", {}).get("name")
        notes.append(
            f"latency figures are a proxy: {target} runs {first.get('proxy_for') or drop.get('proxy_for')}, which "
            "is not available on this machine and no --host was given, so latency was measured with onnxruntime "
            "on this CPU (block savings and speed-ups are indicative only; milliseconds are not the device's)"
        )
    if "remote" in sources:
        measured = first.get("measured_on") or drop.get("measured_on") or {}
        notes.append(
            f"latency measured on {measured.get('host')} with {measured.get('runtime')} "
            f"(power mode {measured.get('nvpmodel_mode') or 'unknown'})"
        )
        requested, used = measured.get("runtime_requested"), measured.get("runtime_used")
        if requested and used and requested != used:
            notes.append(
                f"fallback: {requested} was asked for, but {measured.get('host')} does not have it, so latency there "
                f"was measured with {used}; these are not {requested} figures"
            )
    for key in ("recipe_note", "budget_note", "student_note", "memory_note"):
        if run.manifest.get(key):
            notes.append(run.manifest[key])
    exported = stages.get("export", {}).get("metrics", {})
    for name, metrics in exported.items():
        if isinstance(metrics, dict) and metrics.get("fixed_batch"):
            notes.append(
                f"{name} takes a fixed batch of {metrics['fixed_batch']} (its graph was exported or traced at that "
                "batch): its ONNX keeps that batch and larger batches run as several"
            )
    teacher_ms = bench.get("teacher", {}).get("latency", {}).get("median_ms")
    student_ms = bench.get("student", {}).get("latency", {}).get("median_ms")
    if teacher_ms and student_ms and student_ms >= teacher_ms:
        notes.append(
            f"the handed-on model is not faster than the teacher here ({student_ms:.3g} ms against {teacher_ms:.3g} ms, "
            "medians of this bench): a smaller --student, or compressing the teacher itself (`pipeline drop`), "
            "may serve better"
        )
    plan, actual = run.manifest.get("plan"), run.manifest.get("actual")
    if plan and actual and plan["stages"]:
        left_out = f" + {', '.join(plan['unplanned'])}, not estimated yet" if plan["unplanned"] else ""
        notes.append(
            f"plan: {plan['planned_s']:.0f} s estimated{left_out}; the stages took {actual['wall_s']:.0f} s "
            "(per stage: the manifest's plan and actual)"
        )
    engine = stages.get("engine", {}).get("metrics")
    if engine and not engine.get("built"):
        notes.append(
            f"no TensorRT engine built ({engine.get('reason')}); on the device run "
            f"{run.root / 'engine' / 'build_on_device.sh'}"
        )
    elif engine:
        notes.append(
            f"engine: {run.root / 'engine' / 'model.engine'} (TensorRT {engine['stamp'].get('tensorrt_version')}, "
            f"built on {engine.get('built_on')})"
        )
    return notes
