"""One model at a time: export it, time it, build and pre-flight its TensorRT engine; and the synthesizers."""

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from pipeline.cli.app import app, input_shape_option, run_action, stdout
from pipeline.cli.options import (
    ARCH,
    BUDGET,
    CHANNEL_ORDER,
    DEBUG,
    EVAL,
    HOST,
    INFO_COMMANDS,
    INPUT_SHAPE,
    JSON,
    MEAN,
    MODEL_COMMANDS,
    NUM_CLASSES,
    OUTPUT_PANEL,
    PIXEL_SCALE,
    PREPROCESS_FILE,
    QUIET,
    STD,
    TARGET,
    TEACHER,
    TRUST,
)


@app.command(rich_help_panel=INFO_COMMANDS)
def synthesizers(json_output: bool = JSON):
    """List the synthesizers, their presets and options (set with --synth-preset / --synth-option KEY=VALUE)."""
    from pipeline.synthesize import list_synthesizers, synthesizer_class

    rows = [
        {
            "name": name,
            "description": text,
            "presets": list(synthesizer_class(name).presets),
            "options": synthesizer_class(name).defaults,
        }
        for name, text in list_synthesizers().items()
    ]
    if json_output:
        stdout.print_json(json.dumps(rows))
        return
    table = Table(title="synthesizers")
    for column in ("name", "description", "presets", "options (defaults)"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["name"],
            row["description"],
            ", ".join(row["presets"]) or "—",
            ", ".join(f"{k}={v}" for k, v in row["options"].items()),
        )
    stdout.print(table)


@app.command(rich_help_panel=MODEL_COMMANDS)
def export(
    teacher: Optional[str] = TEACHER,
    arch: Optional[str] = ARCH,
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    trust_checkpoint: bool = TRUST,
    input_shape: Optional[str] = INPUT_SHAPE,
    mean: Optional[str] = MEAN,
    std: Optional[str] = STD,
    channel_order: Optional[str] = CHANNEL_ORDER,
    pixel_scale: Optional[float] = PIXEL_SCALE,
    preprocess: Optional[str] = PREPROCESS_FILE,
    num_classes: Optional[int] = NUM_CLASSES,
    eval: Optional[str] = EVAL,
    opset: int = typer.Option(17, "--opset", help="ONNX opset (>= 17)."),
    json_output: bool = JSON,
    debug: bool = DEBUG,
    quiet: bool = QUIET,
):
    """Export a checkpoint directly to ONNX (dynamic batch), checked and compared with PyTorch.

    Example: `pipeline export --teacher r34.pt --arch resnet34 --out exported/`
    """

    def action():
        from pipeline.assets import resolve_teacher
        from pipeline.export.stage import ExportConfig, ExportStage
        from pipeline.preprocess import preprocess_choice
        from pipeline.recipes import checkpoint_readers  # noqa: F401  (dropped and binary checkpoints load too)
        from pipeline.recipes.context import choose_eval
        from pipeline.stage import RunFolder
        from pipeline.teacher_spec import TeacherSpec

        chosen_preprocess = preprocess_choice(mean, std, channel_order, pixel_scale, preprocess)
        spec = TeacherSpec(arch, input_shape_option(input_shape), num_classes, trust_checkpoint, chosen_preprocess)
        path = resolve_teacher(teacher)
        # as build reads --eval: 'none' turns it off; unset, Fashion-MNIST for a teacher trained on it
        chosen = choose_eval(eval, spec.load(path) if eval is None else None)
        stage = ExportStage({"model": path}, ExportConfig(opset=opset, eval=chosen, specs={"model": spec}))
        entry = RunFolder(out).run(stage, force=True)
        return {"onnx": str(Path(out) / entry["artifacts"]["model"]["path"]), **entry["metrics"]["model"]}

    result = run_action(debug, quiet, action)
    if json_output:
        stdout.print_json(json.dumps(result, default=str))
    else:
        stdout.print(
            f"{result['onnx']}: {result['size_bytes'] / 1e6:.2f} MB, parity max |diff| "
            f"{result['parity_max_abs_diff']:.2e}, top-1 agreement {result['parity_top1_agreement']:.4f}"
        )


@app.command(rich_help_panel=MODEL_COMMANDS)
def bench(
    teacher: Optional[str] = typer.Option(
        None,
        "--teacher",
        "-t",
        help="Model to measure: any checkpoint `build` accepts, "
        "or an exported .onnx file. Default: the embedded teacher.",
    ),
    arch: Optional[str] = ARCH,
    target: Optional[str] = TARGET,
    budget: Optional[str] = BUDGET,
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the export and bench results."),
    trust_checkpoint: bool = TRUST,
    input_shape: Optional[str] = INPUT_SHAPE,
    mean: Optional[str] = MEAN,
    std: Optional[str] = STD,
    channel_order: Optional[str] = CHANNEL_ORDER,
    pixel_scale: Optional[float] = PIXEL_SCALE,
    preprocess: Optional[str] = PREPROCESS_FILE,
    num_classes: Optional[int] = NUM_CLASSES,
    eval: Optional[str] = EVAL,
    host: Optional[str] = HOST,
    json_output: bool = JSON,
    debug: bool = DEBUG,
    quiet: bool = QUIET,
):
    """Measure one model's latency on the target's runtime, and its top-1 accuracy when a labelled set is given.

    Warm-up, then interleaved rounds with pinned threads: median, p90, p99 and CV. Checkpoints are exported to
    ONNX (with a parity check) first. With --host (or a target file with a host) the ONNX and the portable bench
    code are copied to the device over SSH; it builds the TensorRT engine there (or uses onnxruntime when the
    device has no TensorRT), records the nvpmodel mode, jetson_clocks, JetPack and TensorRT versions and
    temperatures, and one JSON comes back.

    Example: `pipeline bench --teacher model.onnx --target jetson-orin-nano --host me@jetson.local --out runs/b`
    """

    def action():
        from pipeline.preprocess import preprocess_choice
        from pipeline.recipes.single_model import run_bench_only
        from pipeline.teacher_spec import TeacherSpec

        chosen_preprocess = preprocess_choice(mean, std, channel_order, pixel_scale, preprocess)
        spec = TeacherSpec(arch, input_shape_option(input_shape), num_classes, trust_checkpoint, chosen_preprocess)
        return run_bench_only(
            teacher, spec=spec, target_name=target, budget_name=budget, out=out, eval_spec=eval, host=host
        )

    result = run_action(debug, quiet, action)
    if json_output:
        stdout.print_json(json.dumps(result, default=str))
        return
    latency = result["latency"]
    accuracy = (
        f", top-1 {result['accuracy'] * 100:.2f} % on {result['eval_images']} images" if "accuracy" in result else ""
    )
    where = {
        "remote": f" on {result.get('measured_on', {}).get('host')} ({result.get('measured_on', {}).get('runtime')})",
        "proxy": f" (proxy: onnxruntime here stands in for {result.get('proxy_for')})",
    }.get(result.get("latency_source"), "")
    stdout.print(
        f"{result['onnx']}: median {latency['median_ms']:.3f} ms{where}, p90 {latency['p90_ms']:.3f} ms, "
        f"p99 {latency['p99_ms']:.3f} ms, CV {latency['cv']:.2f}{accuracy}"
    )


@app.command(rich_help_panel=MODEL_COMMANDS)
def engine(
    onnx: Optional[Path] = typer.Option(None, "--onnx", help="ONNX file to build the engine from."),
    run: Optional[Path] = typer.Option(
        None, "--run", help="Run folder: build its handed-on model (quantised, else student)."
    ),
    target: str = typer.Option("jetson-orin-nano", "--target", help="A TensorRT target (see `pipeline targets`)."),
    precision: Optional[str] = typer.Option(
        None,
        "--precision",
        help="fp32, fp16 or int8 (default: the target's). "
        "TensorRT 11 takes precision from the ONNX: give an ONNX in that precision.",
    ),
    host: Optional[str] = HOST,
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        "-o",
        rich_help_panel=OUTPUT_PANEL,
        help=("Run folder for the engine (default: --run, or `runs/ONNX-TARGET-engine`)."),
    ),
    json_output: bool = JSON,
    debug: bool = DEBUG,
    quiet: bool = QUIET,
):
    """Build a TensorRT engine (TensorRT 10 or 11) for a TensorRT target, after a pre-flight check.

    Where it is built: on --host (or the target's host) over SSH, the engine copied back; else here when
    TensorRT (in the target's version range) and a GPU are present; else nowhere: `OUT/engine/` then holds the
    ONNX, `build_on_device.sh` (the trtexec command) and `BUILD_ON_DEVICE.md`. The engine is stamped with its
    TensorRT version, GPU name and compute capability (`model.engine.json`); loading it elsewhere fails clearly.
    Dynamic batch gets one optimisation profile (1 to max_batch, tuned at the target's batch); the timing cache
    stays in the run folder; DLA targets build for their DLA core with GPU fallback.

    Example: `pipeline engine --run runs/resnet20-fmnist-jetson-orin-nano --target jetson-orin-nano`
    """

    def action():
        from pipeline.recipes.single_model import run_engine_only

        return run_engine_only(onnx, run, target_name=target, host=host, precision_name=precision, out=out)

    result = run_action(debug, quiet, action)
    if json_output:
        stdout.print_json(json.dumps(result, default=str))
    elif result.get("built"):
        stamp = result["stamp"]
        stdout.print(
            f"{result['run_folder']}/engine/model.engine: TensorRT {stamp.get('tensorrt_version')}, "
            f"{stamp.get('gpu_name')} (compute {stamp.get('compute_capability')}), built on {result['built_on']}"
        )
    else:
        stdout.print(
            f"engine not built: {result['reason']}\nrun on the device: {result['run_folder']}/engine/build_on_device.sh"
        )


@app.command(rich_help_panel=MODEL_COMMANDS)
def check(
    onnx: Path = typer.Argument(..., help="ONNX file to check."),
    precision: str = typer.Option(
        "fp16",
        "--precision",
        help="Precision the engine will run in: sets the "
        "tensor-core alignment rule (fp16: multiples of 8, int8: of 32; fp32: none).",
    ),
    json_output: bool = JSON,
    debug: bool = DEBUG,
):
    """Pre-flight an ONNX file for TensorRT, without TensorRT; exit status 1 when TensorRT would refuse it.

    Finds the ops TensorRT's ONNX parser does not support (QLinearConv, ConvInteger, contrib ops), non-zero or
    non-int8 Q/DQ zero points, unsupported dtypes, and layers whose channel counts miss the tensor cores.

    Example: `pipeline check runs/r20-int8/quantize/model.onnx --precision int8`
    """

    def action():
        from pipeline.runtimes.tensorrt_preflight import preflight

        return preflight(onnx, precision)

    report = run_action(debug, False, action)
    if json_output:
        stdout.print_json(json.dumps(report.to_dict()))
    else:
        print(report.format())
    if not report.ok:
        raise typer.Exit(1)
