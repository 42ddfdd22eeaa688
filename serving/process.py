"""Start the local server as a child process on a free port and wait until it serves (tests, benchmark, demos)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tfx_modules.config import PROJECT_ROOT

READY_PREFIX = "serving "  # the model server's ready line; the gateway's starts with GATEWAY_PREFIX
GATEWAY_PREFIX = "gateway "


def server_env() -> dict[str, str]:
    """The environment `python -m serving.server` runs in, wherever it is started from."""
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


@contextlib.contextmanager
def child_server(module: str, *args: str, startup_timeout: float = 120.0) -> Iterator[str]:
    """Yield the base URL of `python -m <module> --port 0 <args>` on 127.0.0.1; SIGTERM it afterwards."""
    cmd = [sys.executable, "-m", module, "--port", "0", *args]
    proc = subprocess.Popen(cmd, env=server_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url: list[str] = []
    reader = threading.Thread(target=lambda: url.extend(_ready_url(proc)), daemon=True)
    reader.start()
    reader.join(startup_timeout)
    try:
        if not url:
            raise RuntimeError(f"{module} did not start within {startup_timeout}s (exit code {proc.poll()})")
        yield url[0]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def local_server(model_dir: Path, *args: str, startup_timeout: float = 120.0) -> contextlib.AbstractContextManager[str]:
    """The local model server on a free port, serving `model_dir`."""
    return child_server("serving.server", "--model-dir", str(model_dir), *args, startup_timeout=startup_timeout)


def local_gateway(upstream: str, *args: str) -> contextlib.AbstractContextManager[str]:
    """The gateway on a free port, forwarding to `upstream` (or to what `--routes FILE` names)."""
    return child_server("serving.gateway", "--upstream", upstream, *args, startup_timeout=30.0)


def announced_url(line: str) -> str | None:
    """The base URL in a ready line ("serving <model> version <v> from <dir> on <url>", "gateway to <url> on <url>")."""
    return line.rsplit(" on ", 1)[1].strip() if line.startswith((READY_PREFIX, GATEWAY_PREFIX)) else None


def serve(app: Any, host: str, port: int, ready_line: str) -> None:
    """Run an ASGI app with uvicorn on host:port (0: any free port), printing `<ready_line> on <url>` once listening.

    The socket is bound and listening before the line is printed: the kernel queues connections until uvicorn
    accepts them, so a client that reads the line and connects at once is never refused. IPPROTO_TCP explicitly:
    asyncio sets TCP_NODELAY only on such sockets; without it keep-alive requests wait ~40 ms on delayed ACKs.
    """
    import uvicorn  # the ML and the Airflow environment both have it; the rest of this module is stdlib only

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    sock.listen(config.backlog)
    bound_host, bound_port = sock.getsockname()[:2]
    print(f"{ready_line} on http://{bound_host}:{bound_port}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


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
