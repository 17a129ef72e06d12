"""Hostile conditions around a run folder: Ctrl-C and SIGTERM, SIGKILL inside every stage, a full disk, hand edits.

Each ends in one line and a non-zero exit, and nothing finished earlier is lost or half-replaced. The crash
points are real SIGKILLs the process sends itself at named moments (pipeline/failpoints.py): no handler, no
`finally` runs, exactly as when the OOM killer or a power cut strikes there. Those runs, and the one under a
file-size limit, are processes of their own (`forked_cli`); the runs that finish go through `invoke_cli`.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from forked_cli import fork_cli

from pipeline.fileio import sha256_file
from tests.conftest import ROOT, invoke_cli

pytestmark = pytest.mark.slow

# A Jetson build runs all seven stages. Steps instead of seconds and named blocks instead of a latency-driven
# choice make it reproducible: the only inputs left are the seed and the machine.
BUILD = [
    "build",
    "--target",
    "jetson-orin-nano",
    "--budget",
    "smoke",
    "--steps",
    "16",
    "--drop-blocks",
    "layer2.1,layer3.1",
    "--eval",
    "none",
    "--seed",
    "3",
]
# What the build hands on. Latency tables and bench reports are measurements: they differ run to run.
MODEL_ARTIFACTS = {
    "synthesize": ("transfer_set", "synthesizer", "preview"),
    "distill": ("student", "transfer_set", "synthesizer"),
    "drop": ("model", "selection"),
    "export": ("teacher", "student"),
    "quantize": ("model",),
    "engine": ("onnx", "script", "instructions"),
}
# Where each attempt dies: inside the three training loops (after a step's work, before its checkpoint, so
# resuming redoes it), and at the three moments of publishing a stage.
CRASHES = [
    "synthesize:step-3",
    "distill:step-5",
    "drop:step-7",
    "export:written",
    "quantize:swapped",
    "engine:started",
    "bench:written",
]
RESUMED = {"synthesize", "distill", "drop"}  # stages whose partial work survives (the others start over)


def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text()) if (run / "manifest.json").exists() else {"stages": {}}


def _model_hashes(run: Path) -> dict[str, str]:
    stages = _manifest(run)["stages"]
    hashes = {
        f"{stage}/{name}": stages[stage]["artifacts"][name]["sha256"]
        for stage, names in MODEL_ARTIFACTS.items()
        for name in names
    }
    for key, digest in hashes.items():  # the manifest's word is checked against the files themselves
        stage, name = key.split("/")
        assert sha256_file(run / stages[stage]["artifacts"][name]["path"]) == digest, key
    return hashes


def _start(run: Path, failpoint: str | None = None) -> subprocess.CompletedProcess:
    """A build that dies at `failpoint` runs in a process of its own (the SIGKILL takes that process with it);
    the runs that finish go through the same application in this one."""
    env = {"PIPELINE_RESUME_EVERY_S": "0"}  # checkpoint every step
    if failpoint is None:
        return invoke_cli(*BUILD, "--out", str(run), env=env)
    return fork_cli(*BUILD, "--out", str(run), cwd=ROOT, env={**env, "PIPELINE_FAILPOINTS": failpoint})


def test_sigkill_in_every_stage_then_resume_gives_the_same_artifacts_as_an_uninterrupted_run(tmp_path):
    reference = tmp_path / "reference"
    result = _start(reference)
    assert result.returncode == 0, result.stderr
    expected = _model_hashes(reference)

    run = tmp_path / "killed"
    for crash in CRASHES:
        stage = crash.split(":")[0]
        before = _manifest(run)["stages"]
        earlier = {name: entry["artifacts"] for name, entry in before.items()}
        result = _start(run, crash)
        assert result.returncode == -signal.SIGKILL, f"{crash} did not kill the build: {result.stderr[-500:]}"
        after = _manifest(run)["stages"]
        if crash.endswith(":swapped"):  # the new folder is in place but unrecorded: the next run must redo it
            assert stage not in after or after[stage] == before.get(stage)
        else:
            assert stage not in after, f"{crash}: the killed stage was recorded as done"
        for name, artifacts in earlier.items():  # finished stages: untouched, on disk too
            assert after[name]["artifacts"] == artifacts
            for artifact in artifacts.values():
                assert sha256_file(run / artifact["path"]) == artifact["sha256"], f"{crash} damaged {artifact['path']}"
        if stage in RESUMED:
            assert (run / f".partial-{stage}" / "resume.pt").is_file(), f"{crash}: no checkpoint to resume from"

    result = _start(run)
    assert result.returncode == 0, result.stderr
    stages = _manifest(run)["stages"]
    assert list(stages) == ["synthesize", "distill", "drop", "export", "quantize", "engine", "bench"]
    for stage in RESUMED:
        metrics = stages[stage]["metrics"]
        assert (metrics["finetune"]["resumed"] if stage == "drop" else metrics["resumed"]) is True, stage
    assert stages["distill"]["metrics"]["steps"] + stages["synthesize"]["metrics"]["steps"] == 16
    assert _model_hashes(run) == expected
    assert not list(run.glob(".partial-*")) and not list(run.rglob(".*.tmp"))


def test_a_write_that_fails_for_lack_of_space_leaves_earlier_stages_intact_and_nothing_half_written(tmp_path):
    run = tmp_path / "run"
    # 2 steps: what `distill --steps 8` gives synthesize (8 x 5 s / 17 s), so distill finds it up to date
    first = invoke_cli(
        "synthesize", "--teacher", "embedded:lenet5-fmnist", "--budget", "smoke", "--steps", "2", "--out", str(run)
    )
    assert first.returncode == 0, first.stderr
    synthesized = _manifest(run)["stages"]["synthesize"]
    pool_bytes = synthesized["artifacts"]["transfer_set"]["bytes"]

    # distill's transfer set holds more images than synthesize's (and its student is bigger still): a write
    # inside distill runs out of room part-way
    args = [
        "distill",
        "--teacher",
        "embedded:lenet5-fmnist",
        "--budget",
        "smoke",
        "--steps",
        "8",
        "--eval",
        "none",
        "--out",
        str(run),
    ]
    result = fork_cli(*args, cwd=ROOT, file_size_limit=pool_bytes - 1, timeout=300)
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert (
        message.startswith("error: file too large")
        and ".partial-distill/" in message
        and "run the same command" in message
    )
    assert "Traceback" not in result.stderr and "synthesize: up to date, skipped" in result.stderr
    assert list(_manifest(run)["stages"]) == ["synthesize"]  # the manifest is still whole JSON, and knows no distill
    assert not (run / "distill").exists()
    for artifact in synthesized["artifacts"].values():
        assert sha256_file(run / artifact["path"]) == artifact["sha256"]

    again = invoke_cli(*args)  # with room again, the same command finishes the job
    assert again.returncode == 0, again.stderr
    assert _manifest(run)["stages"]["distill"]["status"] == "done"


def test_atomic_write_on_a_full_file_system_keeps_the_old_file(tmp_path):
    """A real ENOSPC from a 64 KiB tmpfs (needs root to mount; CI runs as root)."""
    from pipeline.fileio import atomic_write_bytes

    mount = tmp_path / "small"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip() or 'not root'})")
    try:
        target = mount / "model.onnx"
        atomic_write_bytes(target, b"old contents")
        with pytest.raises(OSError) as raised:
            atomic_write_bytes(target, b"x" * (1 << 20))
        import errno

        assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
        assert target.read_bytes() == b"old contents"
        assert [p.name for p in mount.iterdir()] == ["model.onnx"]  # the temp file is gone
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_run_folder_edited_by_hand(tmp_path):
    run = tmp_path / "run"
    args = [
        "distill",
        "--teacher",
        "embedded:lenet5-fmnist",
        "--budget",
        "smoke",
        "--steps",
        "6",
        "--eval",
        "none",
        "--out",
        str(run),
    ]
    assert invoke_cli(*args).returncode == 0
    manifest_path = run / "manifest.json"
    good = manifest_path.read_text()

    # a finished artifact overwritten: noticed, and the stage (only that one) runs again
    student = run / "distill" / "student.pt"
    student.write_bytes(student.read_bytes()[:-10] + b"0123456789")
    result = invoke_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "distill/student.pt changed or went missing" in result.stderr
    assert "synthesize: up to date, skipped" in result.stderr
    assert sha256_file(student) == _manifest(run)["stages"]["distill"]["artifacts"]["student"]["sha256"]

    # bundling a folder whose files no longer match their records is refused
    student.write_bytes(b"not a checkpoint")
    result = invoke_cli("bundle", str(run))
    assert result.returncode == 2 and "distill/student.pt" in result.stderr and "edited by hand" in result.stderr

    # a damaged manifest: one line, exit 2, and nothing in the folder is touched
    good = json.loads(good)
    edits = {
        "stages is a list": {**good, "stages": []},
        "artifact without a hash": {
            **good,
            "stages": {
                **good["stages"],
                "distill": {**good["stages"]["distill"], "artifacts": {"student": {"path": "distill/student.pt"}}},
            },
        },
        "path outside the folder": {
            **good,
            "stages": {
                **good["stages"],
                "distill": {
                    **good["stages"]["distill"],
                    "artifacts": {"student": {"path": "../../etc/passwd", "sha256": "0"}},
                },
            },
        },
    }
    for what, edited in edits.items():
        manifest_path.write_text(json.dumps(edited))
        files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
        result = invoke_cli(*args)
        assert result.returncode == 2, what
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "edited by hand or damaged" in lines[0], (what, result.stderr)
        assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"} == files, what


def test_a_crash_between_the_two_renames_of_a_republished_stage_recovers(tmp_path):
    """Re-running a stage with new settings replaces its folder in two renames; dying between them leaves
    neither folder in place. The next run must notice and redo the stage, not trust the old record."""
    args = ["synthesize", "--teacher", "embedded:lenet5-fmnist", "--budget", "smoke", "--out", str(tmp_path / "run")]
    assert invoke_cli(*args, "--steps", "2").returncode == 0
    result = fork_cli(*args, "--steps", "3", cwd=ROOT, env={"PIPELINE_FAILPOINTS": "synthesize:half-swapped"})
    assert result.returncode == -signal.SIGKILL
    run = tmp_path / "run"
    assert not (run / "synthesize").exists() and (run / ".old-synthesize").is_dir()
    result = invoke_cli(*args, "--steps", "3")
    assert result.returncode == 0, result.stderr
    assert _manifest(run)["stages"]["synthesize"]["metrics"]["steps"] == 3
    assert not (run / ".old-synthesize").exists()


def _start_build(run: Path, env: dict | None = None) -> subprocess.Popen:
    import os

    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "build",
            "--teacher",
            "embedded:lenet5-fmnist",
            "--budget",
            "smoke",
            "--out",
            str(run),
            "--eval",
            "none",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        # a shell's background job (`cmd &`) inherits SIGINT ignored, and Python then never
        # turns Ctrl-C into KeyboardInterrupt: give the child the default disposition back
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for(condition, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.2)


@pytest.mark.parametrize(
    "sent, status, said",
    [
        (signal.SIGINT, 130, "interrupted: finished stages are kept"),
        # what a CI job's timeout sends: the same ending (the resume after it is the same path: not run twice)
        (signal.SIGTERM, 143, "terminated (SIGTERM): finished stages are kept"),
    ],
)
def test_ctrl_c_or_sigterm_keeps_finished_stages_and_rerun_resumes(tmp_path, sent, status, said):
    run = tmp_path / "run"
    process = _start_build(run)
    _wait_for(lambda: (run / ".partial-distill").exists())
    process.send_signal(sent)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == status, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert said in lines[-1] and "Traceback" not in stderr
    finished = _manifest(run)["stages"]["synthesize"]["finished_at"]
    assert "distill" not in _manifest(run)["stages"]
    if sent == signal.SIGTERM:
        return

    result = invoke_cli(
        "build", "--teacher", "embedded:lenet5-fmnist", "--budget", "smoke", "--out", str(run), "--eval", "none"
    )
    assert result.returncode == 0, result.stderr
    assert "synthesize: up to date, skipped" in result.stderr
    manifest = _manifest(run)
    assert manifest["stages"]["synthesize"]["finished_at"] == finished
    assert list(manifest["stages"]) == ["synthesize", "distill", "export", "bench"]
