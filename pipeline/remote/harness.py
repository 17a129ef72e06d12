"""The remote harness: time ONNX models (and build TensorRT engines) on a device reached over SSH.

One call = one remote folder: the portable code (`pipeline/portable/`, stdlib + numpy), a spec and the models are
copied there, `python3 -m portable.device_bench` runs with the device's python, and its JSON result (plus the engines, when asked) is copied back.
The folder is removed afterwards unless the target names a fixed `remote.workdir`.
"""

import json
import shlex
import shutil
import tempfile
from pathlib import Path

from pipeline import portable
from pipeline.errors import PipelineError
from pipeline.progress import log
from pipeline.remote.ssh import SshHost

PORTABLE = Path(portable.__file__).parent  # copied as it is: relative imports only


def remote_run(
    host: SshHost,
    models: dict[str, Path],
    spec: dict,
    *,
    python: str = "python3",
    workdir: str | None = None,
    fetch_engines: Path | None = None,
    timeout: float = 3600,
    facts_only: bool = False,
) -> dict:
    """Run `portable.device_bench` on `host` over `models` with `spec` (models are filled in); return its result."""
    for name, path in models.items():
        if not Path(path).is_file():
            raise PipelineError(f"model {name} ({path}) does not exist")
    if workdir:
        folder = workdir
        host.run(f"mkdir -p {shlex.quote(folder)}", timeout=60)
    else:
        folder = host.run("mktemp -d /tmp/edge-pipeline-bench.XXXXXX", timeout=60).stdout.strip()
        if not folder.startswith("/tmp/edge-pipeline-bench."):
            raise PipelineError(f"unexpected answer from mktemp on {host.destination}: {folder[:80]!r}")
    try:
        with tempfile.TemporaryDirectory(prefix="edge-pipeline-remote-") as local:
            local = Path(local)
            staged = {}
            for name, path in models.items():  # fixed file names on the device: no quoting surprises
                staged[name] = local / f"{name.replace('/', '_')}{Path(path).suffix}"
                staged[name].symlink_to(Path(path).resolve())
            full_spec = {**spec, "models": {name: p.name for name, p in staged.items()}}
            (local / "spec.json").write_text(json.dumps(full_spec, indent=1))
            shutil.copytree(PORTABLE, local / "portable", ignore=shutil.ignore_patterns("__pycache__"))
            log(f"remote: copying {len(models)} model(s) and the bench code to {host.destination}:{folder}")
            host.put([local / "portable", local / "spec.json", *staged.values()], folder, recursive=True)
            command = (
                f"cd {shlex.quote(folder)} && {python} -m portable.device_bench --spec spec.json --out result.json"
                + (" --facts" if facts_only else "")  # only the device's facts (pipeline doctor)
            )
            done = host.run(command, timeout=timeout, check=False)
            host.get(f"{folder}/result.json", local / "result.json")
            result = json.loads((local / "result.json").read_text())
            if done.returncode != 0 or "error" in result:
                raise PipelineError(
                    f"bench on {host.destination} failed: {result.get('error') or done.stderr.strip()[-200:]}"
                )
            if fetch_engines is not None and result.get("engines"):
                fetch_engines.mkdir(parents=True, exist_ok=True)
                host.get(f"{folder}/engines", fetch_engines, recursive=True)
            result["host"] = host.destination
            return result
    finally:
        if not workdir:
            host.run(f"rm -rf {shlex.quote(folder)}", timeout=60, check=False)
