"""A thin, honest wrapper over the OpenSSH client: batch mode (never prompts), a connect timeout, and one-line
errors that say which host failed and why."""

import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class SshHost:
    destination: str  # "user@host" or "host"
    port: int = 22
    identity: str | None = None
    options: tuple[str, ...] = field(default_factory=tuple)  # extra "Key=Value" options
    connect_timeout: int = 15

    @classmethod
    def from_settings(cls, host: str, remote: dict | None) -> "SshHost":
        """From the `remote` dict that latency settings and engine configs carry (a target's [remote] table)."""
        remote = remote or {}
        return cls(
            host,
            port=remote.get("port", 22),
            identity=remote.get("identity"),
            options=tuple(remote.get("ssh_options", ())),
        )

    def _common(self) -> list[str]:
        args = [
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={self.connect_timeout}",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            "LogLevel=ERROR",
        ]
        if self.identity:
            args += ["-i", str(Path(self.identity).expanduser()), "-o", "IdentitiesOnly=yes"]
        for option in self.options:
            args += ["-o", option]
        return args

    def _fail(self, what: str, done: subprocess.CompletedProcess) -> PipelineError:
        lines = [line for line in (done.stderr or "").splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"exit status {done.returncode}"
        return PipelineError(f"{what} on {self.destination}:{self.port} failed: {reason}")

    def _invoke(self, args: list[str], what: str, timeout: float) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            raise PipelineError(
                f"{args[0]} not found: install the OpenSSH client (apt-get install openssh-client)"
            ) from None
        except subprocess.TimeoutExpired:
            raise PipelineError(f"{what} on {self.destination} did not finish in {timeout:.0f} s") from None

    def run(self, command: str, *, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        """Run a shell command on the host; its stdout/stderr come back as text."""
        done = self._invoke(
            ["ssh", "-p", str(self.port), *self._common(), self.destination, command], f"`{command[:60]}`", timeout
        )
        if done.returncode == 255:  # ssh's own failure (connection, authentication), not the command's
            raise self._fail("ssh", done)
        if check and done.returncode != 0:
            raise self._fail(f"`{command[:60]}`", done)
        return done

    def put(self, files: list[Path], remote_folder: str, *, recursive: bool = False, timeout: float = 600) -> None:
        self._scp(
            [str(f) for f in files],
            f"{self.destination}:{shlex.quote(remote_folder)}/",
            "copy to",
            timeout,
            recursive=recursive,
        )

    def get(self, remote_path: str, local_path: Path, *, recursive: bool = False, timeout: float = 600) -> None:
        self._scp(
            [f"{self.destination}:{shlex.quote(remote_path)}"],
            str(local_path),
            "copy from",
            timeout,
            recursive=recursive,
        )

    def _scp(self, sources: list[str], destination: str, what: str, timeout: float, recursive: bool = False) -> None:
        args = [
            "scp",
            "-q",
            "-P",
            str(self.port),
            *self._common(),
            *(["-r"] if recursive else []),
            *sources,
            destination,
        ]
        done = self._invoke(args, f"scp ({what})", timeout)
        if done.returncode != 0:
            raise self._fail(f"scp ({what})", done)
