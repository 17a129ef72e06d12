"""A real SSH "device" on 127.0.0.1 for the remote-harness tests: OpenSSH's sshd, started by the tests with
a generated host key and client key, on a free port. Nothing about SSH is mocked; the remote side runs this
machine's python (the bench script's onnxruntime path, since there is no TensorRT here)."""

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = next((p for p in (shutil.which("sshd"), "/usr/sbin/sshd") if p and os.path.isfile(p)), None)
SKIP_REASON = (
    None
    if SSHD and shutil.which("ssh") and shutil.which("ssh-keygen")
    else "OpenSSH server not installed (apt-get install openssh-server); the remote harness is tested against a real sshd"
)


@dataclass
class LoopbackDevice:
    user: str
    port: int
    identity: Path
    known_hosts: Path
    python: str = sys.executable

    @property
    def host(self) -> str:
        return f"{self.user}@127.0.0.1"

    def ssh_options(self) -> list[str]:
        return [f"UserKnownHostsFile={self.known_hosts}", "StrictHostKeyChecking=no"]

    def target_toml(self, base: str = "jetson-orin-nano", **overrides) -> str:
        """A target file for this device: a Jetson profile whose host is the loopback sshd."""
        import tomllib

        from pipeline.targets import TARGETS_DIR

        data = tomllib.loads((TARGETS_DIR / f"{base}.toml").read_text())
        data.update(name=f"{base}-loopback", host=self.host, **overrides)
        data["remote"] = {
            "port": self.port,
            "python": self.python,
            "identity": str(self.identity),
            "ssh_options": self.ssh_options(),
        }
        return _to_toml(data)


def _to_toml(data: dict) -> str:
    import json

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, dict):  # an inline table (the releases list holds them)
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for table, entries in data.items():
        if isinstance(entries, dict):
            lines += [f"[{table}]", *[f"{k} = {value(v)}" for k, v in entries.items()]]
    return "\n".join(lines) + "\n"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_sshd(folder: Path):
    """Start sshd on a free port; returns (process, LoopbackDevice). The caller terminates the process."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True)
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    (folder / "authorized_keys").chmod(0o600)
    port = _free_port()
    sftp = next(
        (p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server") if os.path.isfile(p)), None
    )
    config = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {folder / 'host_key'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}",
        f"PidFile {folder / 'sshd.pid'}",
        "StrictModes no",
        "UsePAM no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "PermitRootLogin prohibit-password",
        *([f"Subsystem sftp {sftp}"] if sftp else []),
    ]
    (folder / "sshd_config").write_text("\n".join(config) + "\n")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege-separation directory sshd insists on as root
    log = open(folder / "sshd.log", "w")
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(folder / "sshd_config")], stdout=log, stderr=log)
    user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    device = LoopbackDevice(user, port, folder / "client_key", folder / "known_hosts")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited: {(folder / 'sshd.log').read_text()[-500:]}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process, device
        time.sleep(0.1)
    process.terminate()
    raise RuntimeError("sshd did not start listening within 20 s")
