"""The one-model commands on the same stages: `pipeline bench` and `pipeline engine`."""

from pathlib import Path

from pipeline.assets import resolve_teacher
from pipeline.bench.stage import BenchStage
from pipeline.budgets import get_budget
from pipeline.engine.stage import EngineStage
from pipeline.errors import PipelineError
from pipeline.export.stage import ExportConfig, ExportStage
from pipeline.preprocess import preprocess_from_onnx
from pipeline.recipes import checkpoint_readers  # noqa: F401  (registers the readers of dropped and binary checkpoints)
from pipeline.recipes.context import choose_eval
from pipeline.recipes.options import BuildOptions
from pipeline.recipes.stage_specs import bench_config, engine_config
from pipeline.run_view import RunView
from pipeline.stage import RunFolder
from pipeline.targets import load_target
from pipeline.teacher_spec import TeacherSpec


def run_bench_only(
    model: str | None,
    *,
    spec: TeacherSpec,
    target_name: str | None,
    budget_name: str | None,
    out: Path,
    eval_spec: str | None,
    host: str | None = None,
) -> dict:
    """`pipeline bench`: latency (and accuracy with --eval) of one model: a checkpoint (exported first) or an .onnx
    file; on the target's host over SSH when it has one."""
    target = load_target(target_name or BuildOptions.target).with_host(host)
    budget = get_budget(budget_name or BuildOptions.budget)
    path = resolve_teacher(model)
    run = RunFolder(out)
    if path.suffix == ".onnx":
        preprocess = preprocess_from_onnx(path, spec.input_shape)
        if spec.preprocess is not None:  # an .onnx file records no normalisation: the user's, else the guess
            preprocess = spec.preprocess.apply(preprocess, path.name)
        eval_spec = choose_eval(eval_spec, None)
    else:
        loaded = spec.load(path)
        preprocess = loaded.preprocess
        eval_spec = choose_eval(eval_spec, loaded)
        run.run(ExportStage({"model": path}, ExportConfig(eval=eval_spec, specs={"model": spec})))
        path = run.artifact("export", "model")
    entry = run.run(BenchStage({"model": path}, bench_config(target, budget, preprocess, eval_spec)))
    return {"run_folder": str(run.root), "onnx": str(path), **entry["metrics"]["model"]}


def run_engine_only(
    onnx: Path | None,
    run_folder: Path | None,
    *,
    target_name: str,
    host: str | None,
    precision_name: str | None,
    out: Path | None,
) -> dict:
    """`pipeline engine`: pre-flight and build the TensorRT engine for one ONNX file, or for the model a run
    folder hands on (its quantised model, else its student), into `<out>/engine/`."""
    if (onnx is None) == (run_folder is None):
        raise PipelineError("give the model to build: --onnx FILE or --run RUN_FOLDER")
    if run_folder is not None:
        onnx = RunView(run_folder).handed_on().onnx
        out = out or run_folder
    target = load_target(target_name).with_host(host)
    if target.runtime != "tensorrt":
        raise PipelineError(
            f"target {target.name} runs {target.runtime}: engines are for TensorRT targets "
            f"({', '.join(n for n in available_target_names() if load_target(n).runtime == 'tensorrt')})"
        )
    wanted = precision_name or target.precision
    target.check_precision(wanted)
    onnx = Path(onnx)
    if not onnx.is_file():
        raise PipelineError(f"ONNX file not found: {onnx}")
    preprocess = preprocess_from_onnx(onnx, None)
    run = RunFolder(out or Path("runs") / f"{onnx.stem}-{target.name}-engine")
    entry = run.run(
        EngineStage(
            onnx,
            engine_config(target, wanted, preprocess.input_shape),
            previous_cache=run.root / "engine" / "timing.cache",
        )
    )
    return {"run_folder": str(run.root), "onnx": str(onnx), **entry["metrics"]}


def available_target_names() -> list[str]:
    from pipeline.targets import available_targets

    return available_targets()
