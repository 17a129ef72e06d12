"""What is available: architectures, targets, and the teachers (trained by the project's own command)."""

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from pipeline.cli.app import app, input_shape_option, run_action, stdout, teacher_app
from pipeline.cli.options import (
    ARCH,
    DEBUG,
    HOST,
    INFO_COMMANDS,
    INPUT_SHAPE,
    JSON,
    NUM_CLASSES,
    QUIET,
    TARGET,
    TEACHER,
    TRUST,
)


@app.command(rich_help_panel=INFO_COMMANDS)
def models(json_output: bool = JSON):
    """List the architectures in the registry."""
    from pipeline.models import get_spec, list_models

    rows = [get_spec(name) for name in list_models()]
    if json_output:
        stdout.print_json(
            json.dumps(
                [
                    {"name": s.name, "family": s.family, "input": s.default_input, "classes": s.default_classes}
                    for s in rows
                ]
            )
        )
        return
    table = Table(title="architectures")
    for column in ("name", "family", "default input", "classes", "description"):
        table.add_column(column)
    for spec in rows:
        table.add_row(
            spec.name, spec.family, "x".join(map(str, spec.default_input)), str(spec.default_classes), spec.description
        )
    stdout.print(table)


@app.command(rich_help_panel=INFO_COMMANDS)
def targets(json_output: bool = JSON, debug: bool = DEBUG):
    """List the deployment targets (targets/*.toml)."""

    def action():
        from pipeline.targets import available_targets, load_target

        return [load_target(name).to_dict() for name in available_targets()]

    rows = run_action(debug, False, action)
    if json_output:
        stdout.print_json(json.dumps(rows, default=str))
        return
    table = Table(title="targets")
    for column in ("name", "runtime", "device", "precision", "batch", "description"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["name"], row["runtime"], row["device"], row["precision"], str(row["batch"]), row["description"]
        )
    stdout.print(table)


@app.command(rich_help_panel=INFO_COMMANDS)
def doctor(
    target: Optional[str] = TARGET,
    host: Optional[str] = HOST,
    json_output: bool = JSON,
    debug: bool = DEBUG,
):
    """What is installed here and on the target's device, what each stage will use, and what is missing.

    Here: Python, PyTorch and CUDA (GPU, compute capability), onnxruntime and its providers, TensorRT's Python API
    and trtexec with their versions, the CUDA buffer backends. With --host (or a target file with a host) the
    same probe runs on the device over SSH (TensorRT, trtexec, onnxruntime, JetPack/L4T, nvpmodel mode,
    jetson_clocks, temperatures). Then, for the target: where latency will be measured and with what, where the
    engine will be built, and each missing piece in one line (a TensorRT outside the target's releases, a DLA
    core no release runs).

    Example: `pipeline doctor --target jetson-agx-orin --host me@orin.local`
    """

    def action():
        from pipeline.doctor import doctor as diagnose
        from pipeline.targets import load_target

        chosen = load_target(target or "cpu")
        return diagnose(chosen.with_host(host) if host else chosen)

    report = run_action(debug, False, action)
    if json_output:
        stdout.print_json(json.dumps(report, default=str))
        return
    here, device = report["here"], report["device"]
    table = Table(title=f"doctor: {report['target']} ({report['runtime']})")
    for column in ("", "here", "device" if device is not None else "device (no --host)"):
        table.add_column(column)
    rows = [
        ("machine", "hostname", "hostname"),
        ("CPU", "cpu", "cpu"),
        ("python", "python", None),
        ("torch", "torch_version", None),
        ("GPU", "gpu_name", "gpu"),
        ("onnxruntime", "onnxruntime_version", "onnxruntime_version"),
        ("TensorRT (Python)", "tensorrt_version", "tensorrt_version"),
        ("trtexec", "trtexec_version", "trtexec_version"),
        ("JetPack / L4T", "jetpack", "jetpack"),
        ("power mode", "nvpmodel_mode", "nvpmodel_mode"),
    ]
    for label, mine, theirs in rows:
        there = str((device or {}).get(theirs) or "-") if theirs else ""
        table.add_row(label, escape(str(here.get(mine) or "-")), escape(there))
    stdout.print(table)
    for stage, what in report["uses"].items():
        stdout.print(f"{stage}: {escape(what)}")
    for line in report["missing"] or ["nothing missing for this target"]:
        stdout.print(escape(f"missing: {line}" if report["missing"] else line))


app.add_typer(teacher_app, name="teacher", rich_help_panel=INFO_COMMANDS)


@teacher_app.command("train")
def teacher_train(
    arch: str = typer.Option(..., "--arch", help="Registry architecture, e.g. lenet5 or resnet20."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint file to write."),
    epochs: int = typer.Option(..., "--epochs", help="Training epochs over the 60k Fashion-MNIST images."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    batch_size: int = typer.Option(128, "--batch-size"),
    lr: float = typer.Option(0.1, "--lr", help="Peak learning rate (SGD, one-cycle)."),
    train_images: Optional[int] = typer.Option(
        None, "--train-images", help="Use only the first N training images (quick checks)."
    ),
    json_output: bool = JSON,
    debug: bool = DEBUG,
    quiet: bool = QUIET,
):
    """Train a teacher on Fashion-MNIST (how the embedded teachers were made). The test split is used only
    once, after training, to record the final accuracy."""

    def action():
        from pipeline.teacher.train import train_teacher

        return train_teacher(
            arch, out, epochs=epochs, seed=seed, batch_size=batch_size, lr=lr, train_images=train_images
        )

    record = run_action(debug, quiet, action)
    if json_output:
        stdout.print_json(json.dumps(record, default=str))
    else:
        stdout.print(f"{out}: test accuracy {record['test_accuracy'] * 100:.2f} % after {epochs} epochs")


@teacher_app.command("inspect")
def teacher_inspect(
    teacher: Optional[str] = TEACHER,
    arch: Optional[str] = ARCH,
    trust_checkpoint: bool = TRUST,
    input_shape: Optional[str] = INPUT_SHAPE,
    num_classes: Optional[int] = NUM_CLASSES,
    json_output: bool = JSON,
    debug: bool = DEBUG,
):
    """Show what a checkpoint is: format, architecture, input shape, classes, preprocessing."""

    def action():
        from pipeline.assets import resolve_teacher
        from pipeline.recipes import checkpoint_readers  # noqa: F401  (dropped and binary checkpoints load too)
        from pipeline.teacher_spec import TeacherSpec

        loaded = TeacherSpec(arch, input_shape_option(input_shape), num_classes, trust_checkpoint).load(
            resolve_teacher(teacher)
        )
        return {
            "path": str(loaded.path),
            "format": loaded.source_format,
            "arch": loaded.arch,
            "input_shape": list(loaded.input_shape),
            "num_classes": loaded.num_classes,
            "parameters": sum(p.numel() for p in loaded.model.parameters()),
            "preprocess": loaded.preprocess.to_dict(),
            "metadata": loaded.metadata,
        }

    info = run_action(debug, False, action)
    if json_output:
        stdout.print_json(json.dumps(info, default=str))
    else:
        for key, value in info.items():
            stdout.print(f"{key}: {value}", highlight=False)
