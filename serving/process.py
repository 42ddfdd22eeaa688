"""Start the local server as a child process on a free port and wait until it serves (tests, benchmark, demos)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common.config import PROJECT_ROOT

READY_PREFIX = "serving "  # the model server's ready line; the gateway's starts with GATEWAY_PREFIX
GATEWAY_PREFIX = "gateway "
KEEP_ALIVE_SECONDS = 75  # how long an idle client connection stays open (uvicorn's default: 5)
UPSTREAM_IDLE_SECONDS = 5.0  # how long the gateway keeps an idle connection to a model server: well below that
GRPC_ANNOUNCED = re.compile(r" grpc (\S+:\d+) on ")  # a ready line's gRPC address (`--grpc-port`)
_GRPC_ADDRESSES: dict[str, str] = {}  # base URL -> the gRPC address the same child announced


def server_env() -> dict[str, str]:
    """The environment `python -m serving.server` runs in, wherever it is started from."""
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def start_child(module: str, *args: str, port: int = 0, startup_timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    """Start `python -m <module> --port <port> <args>` on 127.0.0.1 (0: a free port) and wait for its ready line;
    returns the process and its base URL. Fault drills kill it and start it again on the same port."""
    cmd = [sys.executable, "-m", module, "--port", str(port), *args]
    proc = subprocess.Popen(cmd, env=server_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url: list[str] = []
    reader = threading.Thread(target=lambda: url.extend(_ready_url(proc)), daemon=True)
    reader.start()
    reader.join(startup_timeout)
    if not url:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{module} did not start within {startup_timeout}s (exit code {proc.poll()})")
    return proc, url[0]


def stop_child(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_detached(python: str, module: str, *args: str, log: Path, startup_timeout: float = 120.0) -> tuple[int, str]:
    """Start `python -m <module> --port 0 <args>` in a session of its own, output to `log`, and wait for its ready
    line; returns its pid and base URL. It outlives the caller: a rollout's challenger serves across the DAG's stage
    tasks, each a process of its own, and whoever ends the rollout stops it by pid (`stop_pid`)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        cmd = [python, "-m", module, "--port", "0", *args]
        proc = subprocess.Popen(cmd, env=server_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for line in log.read_text(errors="replace").splitlines():
            if url := _announced(line):
                return proc.pid, url
        time.sleep(0.2)
    stop_pid(proc.pid)
    raise RuntimeError(f"{module} did not start within {startup_timeout}s (exit code {proc.poll()}; log {log})")


def stop_pid(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM a process started by `start_detached`, SIGKILL after `timeout`; gone already is fine."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0]:  # our own child: reap it
                    return
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


@contextlib.contextmanager
def child_server(module: str, *args: str, startup_timeout: float = 120.0) -> Iterator[str]:
    """Yield the base URL of `python -m <module> --port 0 <args>` on 127.0.0.1; SIGTERM it afterwards."""
    proc, url = start_child(module, *args, startup_timeout=startup_timeout)
    try:
        yield url
    finally:
        stop_child(proc)


def local_server(model_dir: Path, *args: str, startup_timeout: float = 120.0) -> contextlib.AbstractContextManager[str]:
    """The local model server on a free port, serving `model_dir`."""
    return child_server("serving.server", "--model-dir", str(model_dir), *args, startup_timeout=startup_timeout)


def local_gateway(upstream: str, *args: str) -> contextlib.AbstractContextManager[str]:
    """The gateway on a free port, forwarding to `upstream` (or to what `--routes FILE` names); it logs predictions
    only when `args` name a `--prediction-log` folder."""
    logging = () if any(a.startswith("--prediction-log") for a in args) else ("--no-prediction-log",)
    return child_server("serving.gateway", "--upstream", upstream, *args, *logging, startup_timeout=30.0)


def announced_url(line: str) -> str | None:
    """The base URL in a ready line ("serving <model> version <v> from <dir> on <url>", "gateway to <url> on <url>")."""
    return line.rsplit(" on ", 1)[1].strip() if line.startswith((READY_PREFIX, GATEWAY_PREFIX)) else None


def serve(app: Any, host: str, port: int, ready_line: str) -> None:
    """Run an ASGI app with uvicorn on host:port (0: any free port), printing `<ready_line> on <url>` once listening.

    The socket is bound and listening before the line is printed: the kernel queues connections until uvicorn
    accepts them, so a client that reads the line and connects at once is never refused. IPPROTO_TCP explicitly:
    asyncio sets TCP_NODELAY only on such sockets; without it keep-alive requests wait ~40 ms on delayed ACKs.
    Idle keep-alive connections are kept KEEP_ALIVE_SECONDS, longer than clients keep them in their pools (the
    gateway's and httpx's 5 s): with equal timeouts a client reuses a connection the server is closing, and a server
    that was starved of CPU closes, when it runs again, connections whose next request is already waiting unread;
    either way the gateway got a ReadError and answered 503.
    """
    import uvicorn  # the ML and the Airflow environment both have it; the rest of this module is stdlib only

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, timeout_graceful_shutdown=5, timeout_keep_alive=KEEP_ALIVE_SECONDS
    )
    sock.listen(config.backlog)
    bound_host, bound_port = sock.getsockname()[:2]
    print(f"{ready_line} on http://{bound_host}:{bound_port}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


def _ready_url(proc: subprocess.Popen[str]) -> list[str]:
    assert proc.stdout is not None
    for line in proc.stdout:
        if url := _announced(line):
            return [url]
    return []


def _announced(line: str) -> str | None:
    """The base URL of a ready line, its gRPC address remembered for `grpc_address`; None for any other line."""
    url = announced_url(line)
    if url and (found := GRPC_ANNOUNCED.search(line)):
        _GRPC_ADDRESSES[url] = found[1]
    return url


def grpc_address(url: str) -> str | None:
    """The gRPC address (host:port) a child started by this process announced beside its base URL `url`; None when
    it serves REST only or another process started it (a rollout's challenger given by URL)."""
    return _GRPC_ADDRESSES.get(url.rstrip("/"))


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
