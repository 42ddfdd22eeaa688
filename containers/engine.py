"""A Docker engine for the compose stack: the user's when it answers, else a private `dockerd` (root only).

    python -m containers.engine start    # prints the DOCKER_HOST to use
    python -m containers.engine stop     # stops the private engine (by its pid file), if this module started one

The private engine keeps everything under settings().cache_dir/docker (images survive between runs, outside any
checkout), listens on a unix socket there, and is stopped by its pid file. Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common.config import settings


class EngineError(Exception):
    """No engine answers and none can be started here: the message says what to do."""


@dataclass(frozen=True)
class Private:
    root: Path

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def pid_file(self) -> Path:
        return self.root / "dockerd.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "dockerd.log"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"


def private() -> Private:
    return Private(settings().cache_dir / "docker")


def answers(host: str | None) -> bool:
    """Whether `docker info` succeeds against `host` (None: the CLI's default, or the user's DOCKER_HOST)."""
    env = {**os.environ, "DOCKER_HOST": host} if host else dict(os.environ)
    try:
        return subprocess.run(["docker", "info"], env=env, capture_output=True, timeout=20, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _alive(pid: int) -> bool:
    """Running, and not a zombie: a dockerd started by this process stays one until reaped here."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def private_pid() -> int | None:
    """The pid of the private dockerd if it runs."""
    try:
        pid = int(private().pid_file.read_text())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def start_private(timeout: float = 30.0) -> str:
    """Start the private dockerd unless it runs; returns its DOCKER_HOST."""
    eng = private()
    if private_pid() is not None and answers(eng.host):
        return eng.host
    if os.geteuid() != 0:
        raise EngineError("no Docker engine answers and starting one needs root: start Docker, or run as root")
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise EngineError("no Docker engine answers and dockerd is not installed (Debian: apt-get install docker.io)")
    for sub in ("data", "exec"):
        (eng.root / sub).mkdir(parents=True, exist_ok=True)
    eng.socket.unlink(missing_ok=True)
    cmd = [
        dockerd,
        *("--data-root", str(eng.root / "data"), "--exec-root", str(eng.root / "exec")),
        *("--pidfile", str(eng.pid_file), "--host", eng.host, "--storage-driver", "overlay2"),
    ]
    with eng.log_file.open("ab") as log:
        subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers(eng.host):
            return eng.host
        time.sleep(0.5)
    raise EngineError(f"the private dockerd did not answer within {timeout:.0f}s; see {eng.log_file}")


def stop_private(timeout: float = 30.0) -> bool:
    """Stop the private dockerd by its pid file; True when one was running."""
    pid = private_pid()
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    return True


def ensure() -> str | None:
    """The DOCKER_HOST to use: the user's engine when it answers (None: the CLI's default), else a private one."""
    if shutil.which("docker") is None:
        raise EngineError("the docker CLI is not installed (Debian: apt-get install docker.io)")
    if answers(None):
        return os.environ.get("DOCKER_HOST")
    return start_private()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("start", "stop"))
    args = parser.parse_args(argv)
    if args.command == "stop":
        print("stopped the private dockerd" if stop_private() else "no private dockerd was running")
        return 0
    try:
        host = ensure()
    except EngineError as exc:
        print(f"docker: {exc}", file=sys.stderr)
        return 1
    print(host or "default")
    return 0


if __name__ == "__main__":
    sys.exit(main())
