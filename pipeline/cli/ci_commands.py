"""CI and hand-off: the latency gate, bundles for a mobile team, their verification, and run reports."""

import json
from pathlib import Path
from typing import Optional

import typer

from pipeline.cli.app import app, run_action, stdout
from pipeline.cli.options import CI_COMMANDS, DEBUG, HOST, JSON, OUTPUT_PANEL, QUIET, TARGET
from pipeline.errors import PipelineError
from pipeline.gate.settings import GateSettings

GATE_PANEL = "Gate"
GATE_DEFAULTS = GateSettings()  # shown in the help: the defaults live on the dataclass


@app.command(rich_help_panel=CI_COMMANDS)
def gate(
    candidate: Path = typer.Argument(
        ..., help="The model to check: an ONNX file or a run folder (its handed-on model)."
    ),
    baseline: Path = typer.Option(
        ..., "--baseline", "-b", rich_help_panel=GATE_PANEL, help=("Baseline file (JSON; its model is kept beside it).")
    ),
    max_regression: Optional[str] = typer.Option(
        None,
        "--max-regression",
        rich_help_panel=GATE_PANEL,
        help=(
            "Allowed slowdown, e.g. 5% or 0.05 (default: the target's [gate] max_regression, else "
            f"{GATE_DEFAULTS.max_regression:.0%})."
        ),
    ),
    rounds: Optional[int] = typer.Option(
        None,
        "--rounds",
        rich_help_panel=GATE_PANEL,
        help=(
            "Interleaved baseline/candidate rounds made at least, one paired ratio each (default: the target's "
            f"[gate] rounds, else {GATE_DEFAULTS.rounds}); more follow only while the verdict is not clear."
        ),
    ),
    max_rounds: Optional[int] = typer.Option(
        None,
        "--max-rounds",
        rich_help_panel=GATE_PANEL,
        help=(
            "The most rounds made when the verdict stays unclear: a slowdown close to the allowance, or a "
            f"busy machine (default {GATE_DEFAULTS.max_rounds})."
        ),
    ),
    runs: Optional[int] = typer.Option(
        None,
        "--runs",
        rich_help_panel=GATE_PANEL,
        help=(f"Timed runs per model per round (default: the target's [gate] runs, else {GATE_DEFAULTS.runs})."),
    ),
    update_baseline: bool = typer.Option(
        False,
        "--update-baseline",
        rich_help_panel=GATE_PANEL,
        help=("Write CANDIDATE as the new baseline (model copied beside it; environment recorded) instead of gating."),
    ),
    strict_environment: bool = typer.Option(
        False,
        "--strict-environment",
        rich_help_panel=GATE_PANEL,
        help=("Exit 2 when the environment (CPU, threads, runtime version) differs from the baseline's."),
    ),
    target: Optional[str] = TARGET,
    host: Optional[str] = HOST,
    junit: Optional[Path] = typer.Option(
        None, "--junit", rich_help_panel=OUTPUT_PANEL, help=("Also write a JUnit XML report here.")
    ),
    json_output: bool = JSON,
    debug: bool = DEBUG,
    quiet: bool = QUIET,
):
    """Fail a merge when latency regresses: exit 0 pass, 1 regression, 2 could not measure.

    Baseline and candidate are measured now, on this machine (or the target's --host), in alternating rounds, so
    drift cancels; the verdict is a regression when the bootstrap interval of the (20 % trimmed) mean per-round
    ratio lies above 1 and the ratio exceeds 1 + --max-regression. A baseline from another environment is a
    warning (both models are re-measured anyway), or an error with --strict-environment.

    Example: `pipeline gate runs/pr/ --baseline ci/latency-baseline.json --max-regression 5% --junit gate.xml`
    """

    def action():
        from pipeline.gate.gate import GateSettings, parse_regression, run_gate, write_baseline
        from pipeline.recipes.options import BuildOptions
        from pipeline.targets import load_target

        loaded = load_target(target or BuildOptions.target).with_host(host)
        settings = GateSettings.resolve(
            loaded,
            rounds=rounds,
            max_rounds=max_rounds,
            runs=runs,
            strict_environment=strict_environment,
            max_regression=None if max_regression is None else parse_regression(max_regression),
        )
        if update_baseline:
            return {"baseline_written": write_baseline(candidate, baseline, loaded, settings)}
        return run_gate(candidate, baseline, loaded, settings)

    result = run_action(debug, quiet or json_output, action)
    if "baseline_written" in result:
        record = result["baseline_written"]
        if json_output:
            stdout.print_json(json.dumps(record, default=str))
        else:
            stdout.print(
                f"baseline written: {baseline} ({record['model_file']} beside it), median "
                f"{record['median_ms']:.4f} ms on {record['environment']['cpu']}",
                highlight=False,
            )
        return
    if junit is not None:
        from pipeline.gate.junit import write_junit

        write_junit(result, junit)
    if json_output:
        stdout.print_json(json.dumps(result, default=str))
    else:
        from pipeline.gate.gate import explain

        print(explain(result))
    raise typer.Exit(result["exit_code"])


@app.command(rich_help_panel=CI_COMMANDS)
def bundle(
    run: Path = typer.Argument(..., help="A run folder (after `pipeline build`, `drop` or `quantize`)."),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        "-o",
        rich_help_panel=OUTPUT_PANEL,
        help=("Where the folder and .tar.gz go (default `RUN/bundle`)."),
    ),
    json_output: bool = JSON,
    debug: bool = DEBUG,
):
    """Package a run for a mobile team, as a folder and a .tar.gz.

    The bundle holds the models (ONNX per precision, engines with their TensorRT and GPU stamps), `manifest.json`
    (the sha256 of every file, input and output names, shapes and dtypes, preprocessing, class labels, accuracy,
    latency per target with the harness settings, the build command, library versions, the teacher's hash),
    `MODEL_CARD.md`, `pareto.png`, a reference input with each model's output, and `example/infer.py`.

    Example: `pipeline bundle runs/resnet20-fmnist-cpu`, then
    `pipeline verify runs/resnet20-fmnist-cpu/bundle/resnet20-fmnist-cpu.tar.gz`
    """

    def action():
        from pipeline.bundle.bundle import make_bundle

        return make_bundle(run, out)

    result = run_action(debug, False, action)
    if json_output:
        stdout.print_json(json.dumps(result))
    else:
        stdout.print(
            f"bundle: {result['bundle']} ({result['files']} files; models {', '.join(result['models'])})\n"
            f"archive: {result['archive']}",
            highlight=False,
        )


@app.command(rich_help_panel=CI_COMMANDS)
def verify(
    bundle: Path = typer.Argument(..., help="A bundle folder or its .tar.gz, or an on-device report (.json)."),
    json_output: bool = JSON,
    debug: bool = DEBUG,
):
    """Check a bundle: every byte is what its manifest says, and every model still computes what it did.

    Every file's sha256 against the manifest (and the manifest against `manifest.sha256`), no unlisted files,
    every model loads and reproduces its reference output. Exit 0 when intact, else one line naming the first
    problem and a non-zero exit. Given the JSON `pipeline accept` wrote, checks that its figures are the
    target's: measured on the device with TensorRT (not a fallback), an engine built there with a TensorRT the
    target lists, nothing missing (docs/ON_DEVICE.md).
    """

    def action():
        if bundle.suffix == ".json":
            from pipeline.recipes.acceptance import report_problems

            try:
                report = json.loads(bundle.read_text())
            except (OSError, ValueError) as error:
                raise PipelineError(f"cannot read {bundle}: {error}") from None
            problems = report_problems(report)
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise PipelineError(f"{bundle}: {problems[0]}{more}")
            return {"report": str(bundle), "accepted": True, "target": report["target"], "host": report["host"]}
        from pipeline.bundle.verify import verify_bundle

        return verify_bundle(bundle)

    result = run_action(debug, False, action)
    if "accepted" in result:
        if json_output:
            stdout.print_json(json.dumps(result))
        else:
            stdout.print(f"{result['report']}: accepted, figures measured on {result['host']} for {result['target']}")
        return
    if json_output:
        stdout.print_json(json.dumps(result))
    else:
        models = ", ".join(f"{m['file']} (max |diff| {m['max_abs_diff']:.1e})" for m in result["models"])
        stdout.print(
            f"bundle intact: {result['files_checked']} files match the manifest; models reproduce their "
            f"reference outputs: {models}",
            highlight=False,
        )


@app.command(rich_help_panel=CI_COMMANDS)
def report(
    run: Path = typer.Argument(..., help="A run folder."),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        "-o",
        rich_help_panel=OUTPUT_PANEL,
        help=("Folder for summary.md, summary.csv and pareto.png (default `RUN/report`)."),
    ),
    json_output: bool = JSON,
    debug: bool = DEBUG,
):
    """Summary table of a run folder, as markdown and CSV, with its Pareto plot.

    Teacher against the handed-on model: precision, size, accuracy, latency and where it was measured; the
    accuracy-versus-latency Pareto plot when accuracy was measured."""

    def action():
        from pipeline.bundle.report import write_report

        return write_report(run, out)

    result = run_action(debug, False, action)
    if json_output:
        stdout.print_json(json.dumps(result))
    else:
        print(result["markdown"])
        print(f"\nwritten to {result['folder']}/")


@app.command(rich_help_panel=CI_COMMANDS)
def accept(
    target: str = typer.Option(..., "--target", help="The TensorRT target the device is (a name or a TOML file)."),
    host: Optional[str] = HOST,
    out: Path = typer.Option(Path("runs/on-device"), "--out", "-o", help="Folder for the runs and the report."),
    debug: bool = DEBUG,
    quiet: bool = QUIET,
):
    """The on-device acceptance report: doctor, bench and engine on the device over SSH, in one JSON to send back.

    Runs the doctor's probe on the device, `pipeline bench` of the embedded teacher there (engine built and timed
    on it), and `pipeline engine` for its fp32 ONNX; writes OUT/on_device_report.json and prints its verdict
    (`pipeline verify OUT/on_device_report.json` checks it again anywhere). docs/ON_DEVICE.md is the recipe.

    Example: `pipeline accept --target jetson-orin-nano --host me@jetson.local`
    """

    def action():
        from pipeline.fileio import atomic_write_json
        from pipeline.recipes.acceptance import acceptance_report, report_problems

        report = acceptance_report(target, host, out)
        path = out / "on_device_report.json"
        atomic_write_json(path, report)
        return {"report": str(path), "problems": report_problems(report)}

    result = run_action(debug, quiet, action)
    stdout.print(f"report: {result['report']}")
    for line in result["problems"] or ["accepted: every figure was measured on the device with TensorRT"]:
        stdout.print(f"problem: {line}" if result["problems"] else line, markup=False)
    if result["problems"]:
        raise typer.Exit(1)
