"""Start the local server as a child process on a free port and wait until it serves (tests, benchmark, demos)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from tfx_modules.config import PROJECT_ROOT

READY_PREFIX = "serving "


def server_env() -> dict[str, str]:
    """The environment `python -m serving.server` runs in, wherever it is started from."""
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


@contextlib.contextmanager
def local_server(model_dir: Path, *args: str, startup_timeout: float = 120.0) -> Iterator[str]:
    """Yield the base URL of `python -m serving.server` on 127.0.0.1 (port 0); stop it with SIGTERM afterwards."""
    cmd = [sys.executable, "-m", "serving.server", "--model-dir", str(model_dir), "--port", "0", *args]
    proc = subprocess.Popen(cmd, env=server_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url: list[str] = []
    reader = threading.Thread(target=lambda: url.extend(_ready_url(proc)), daemon=True)
    reader.start()
    reader.join(startup_timeout)
    try:
        if not url:
            raise RuntimeError(f"server did not start within {startup_timeout}s (exit code {proc.poll()})")
        yield url[0]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def announced_url(line: str) -> str | None:
    """The base URL in the server's ready line ("serving <model> version <v> from <dir> on <url>"), else None."""
    return line.rsplit(" on ", 1)[1].strip() if line.startswith(READY_PREFIX) else None


def _ready_url(proc: subprocess.Popen[str]) -> list[str]:
    assert proc.stdout is not None
    for line in proc.stdout:
        if url := announced_url(line):
            return [url]
    return []


def versions(folder: Path) -> dict[int, Path]:
    """The SavedModel versions in a TF Serving layout folder (`<folder>/<version>/saved_model.pb`); {} if none."""
    if not folder.is_dir():
        return {}
    return {int(p.name): p for p in folder.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file()}


def saved_model_dir(path: Path) -> Path:
    """`path` itself when it is a SavedModel, else its newest numeric version (a Pusher-layout model dir)."""
    if (path / "saved_model.pb").is_file():
        return path
    found = versions(path)
    if not found:
        raise FileNotFoundError(f"no SavedModel in {path} or its numeric subfolders")
    return found[max(found)]
