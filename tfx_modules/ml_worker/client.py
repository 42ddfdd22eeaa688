"""How Airflow tasks run code in the ML environment: `call("module:function", *args)`.

The call goes to the warm ML worker of this CREDIT_RISK_HOME (`tfx_modules/ml_worker/server.py`), which is started when
none runs; the call's stdout and stderr come back through a pipe and go to this process's log line by line, at
INFO (TensorFlow's and Beam's chatter is no error; a failure raises). What can go wrong, and what happens:
- no worker, or a dead one: a new one is started (its lock makes it one per CREDIT_RISK_HOME, however many tasks
  ask at once) and the call waits for it; a `light` call starts none and runs in a fresh process of the ML
  environment, as a call does when the worker fails to start, and as every call does with CREDIT_RISK_ML_WORKER=off;
- a worker that takes the call but does not start it (hung): killed, and the call goes to a new one;
- the call raises: MLCallError with its exception text first, then its traceback;
- the call's process dies (killed, out of memory), or the worker is stopped (SIGTERM kills its calls): MLCallError
  saying so; a worker that is killed outright leaves its calls running to the end, and the next call replaces it;
- this process goes away (task killed or timed out): the worker kills the call's process group.
Standard library only: the DAG imports it in the Airflow environment.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import selectors
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.config import PROJECT_ROOT, Settings, settings
from common.processes import start_detached
from tfx_modules.ml_worker.protocol import Reader, address, lock_path, log_path, send

log = logging.getLogger(__name__)
SPAWN_SECONDS = 30.0  # how long a new worker may take to take its lock (before its imports)


class MLCallError(RuntimeError):
    """A call failed in the ML environment, or its process died before it finished."""


class _Unanswered(Exception):
    """The worker accepted a call but started nothing."""


def call(target: str, *args: Any, light: bool = False) -> Any:
    """Run `target` ("module:function") with JSON-able `args` in the ML environment; return its JSON-able result.

    `light`: the call imports little (the intake: TFDV), so with no worker ready it runs in a fresh process at once
    and starts none itself: whether one is worth starting beside it is the caller's choice (the retraining DAG's
    intake starts one for the training that may follow; the monitoring DAG starts none)."""
    config = settings()
    with tempfile.TemporaryDirectory(prefix="credit-risk-ml-", ignore_cleanup_errors=True) as tmp:
        request = {"call": target, "args": list(args), "env": dict(os.environ), "cwd": os.getcwd(), "tmp": tmp}
        for _ in range(2 if config.ml_worker else 0):  # a hung worker is replaced once
            conn = _worker(config, wait=not light)
            if conn is None:
                break
            try:
                return _finish(target, _converse(conn, request, config.ml_worker_answer_seconds))
            except _Unanswered:
                waited = config.ml_worker_answer_seconds
                log.warning("the ML worker did not start %s within %.0f s: restarting it", target, waited)
                stop(config.home, grace=0)
        return _fresh(config, request, target)


def running(home: Path) -> bool:
    """Whether a worker for `home` is alive (starting or serving): its lock is held."""
    try:
        with lock_path(home).open() as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except FileNotFoundError:
        return False
    except BlockingIOError:
        return True
    return False


def start(idle_seconds: float | None = None) -> bool:
    """Start the worker of this CREDIT_RISK_HOME in the background unless one runs or CREDIT_RISK_ML_WORKER is off (it
    is ready once its imports are done); True when this started it. `idle_seconds` overrides
    CREDIT_RISK_ML_WORKER_IDLE_SECONDS (0: never)."""
    config = settings()
    if not config.ml_worker or running(config.home):
        return False
    idle = {} if idle_seconds is None else {"CREDIT_RISK_ML_WORKER_IDLE_SECONDS": str(idle_seconds)}
    _spawn(config, idle)
    return True


def stop(home: Path, grace: float = 30.0) -> bool:
    """Stop the worker of `home` and the calls it runs: SIGTERM, then SIGKILL after `grace` seconds (at once when
    0: a stopped process ignores SIGTERM). False when none ran."""
    if not running(home):
        return False
    pid = int(lock_path(home).read_text())
    for sig, wait in [*([(signal.SIGTERM, grace)] if grace else []), (signal.SIGKILL, 10.0)]:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while running(home) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not running(home):
            break
    return True


def _ml_env() -> dict[str, str]:
    """The environment of an ML-environment process started from here."""
    paths = [str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "TF_USE_LEGACY_KERAS": "1"}


def _connect(home: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(address(home))
    except OSError:
        conn.close()
        return None
    return conn


def _spawn(config: Settings, env: dict[str, str] | None = None) -> None:
    """Start a worker; return once it holds its lock (it then imports for a while) or has exited."""
    command = [str(config.ml_python), "-m", "tfx_modules.ml_worker.server"]
    process = start_detached(command, log_path(config.home), {**_ml_env(), **(env or {})})
    deadline = time.monotonic() + SPAWN_SECONDS
    while process.poll() is None and not running(config.home) and time.monotonic() < deadline:
        time.sleep(0.05)


def _worker(config: Settings, wait: bool) -> socket.socket | None:
    """A connection to the worker, started if none runs, or None: not ready and not to `wait` for, or unable to
    start."""
    home = config.home
    conn = _connect(home)
    if conn is not None or not wait:
        return conn
    if not running(home):
        log.info("starting the ML worker for %s (its log: %s)", home, log_path(home))
        _spawn(config)
    deadline = time.monotonic() + config.ml_worker_start_seconds
    while time.monotonic() < deadline:
        conn = _connect(home)
        if conn is not None:
            return conn
        if not running(home):
            tail = log_path(home).read_text(errors="replace").splitlines()[-5:]
            log.warning("the ML worker exited while starting; its log ends: %s", " | ".join(tail))
            return None
        time.sleep(0.2)
    log.warning("the ML worker is not ready after %.0f s", config.ml_worker_start_seconds)
    return None


def _converse(conn: socket.socket, request: dict, answer_seconds: float) -> dict:
    """Send the request to the worker with the write end of a fresh output pipe; relay until the call is over."""
    read_fd, write_fd = os.pipe()
    with conn:
        try:
            send(conn, request, (write_fd,))
        finally:
            os.close(write_fd)
        return _relay(conn, read_fd, answer_seconds)


def _fresh(config: Settings, request: dict, target: str) -> Any:
    """The call in a new ML-environment process (`ml_worker --one`), spoken to exactly like the worker."""
    log.info("running %s in a fresh ML-environment process", target)
    read_fd, write_fd = os.pipe()
    ours, theirs = socket.socketpair()
    with ours:
        process = subprocess.Popen(
            [str(config.ml_python), "-m", "tfx_modules.ml_worker.server", "--one", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env=_ml_env(),
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=write_fd,
            stderr=write_fd,
            start_new_session=True,
        )
        theirs.close()
        try:
            send(ours, request, (write_fd,))
        except OSError:
            pass  # it died at once: its output and exit status say why
        finally:
            os.close(write_fd)
        messages = _relay(ours, read_fd, None, on_close=lambda: _end_session(process))
    return _finish(target, messages, process.wait())


def _end_session(process: subprocess.Popen) -> None:
    """Once the call's process is gone, whatever it started goes too (and stops holding the output pipe)."""
    process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _relay(
    conn: socket.socket, output: int, answer_seconds: float | None, on_close: Callable[[], None] | None = None
) -> dict:
    """Log the call's output lines and collect its messages until both the connection and the pipe are closed.
    Raises _Unanswered when no "started" arrives within `answer_seconds`."""
    messages: dict = {}
    reader, partial = Reader(conn), b""
    deadline = None if answer_seconds is None else time.monotonic() + answer_seconds
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(conn, selectors.EVENT_READ)
            selector.register(output, selectors.EVENT_READ)
            while selector.get_map():
                waiting = deadline is not None and "started" not in messages
                events = selector.select(max(deadline - time.monotonic(), 0) if waiting else None)
                if waiting and not events:
                    raise _Unanswered
                for key, _ in events:
                    if key.fileobj is conn:
                        if not reader.receive():
                            selector.unregister(conn)
                            if on_close:
                                on_close()
                        for message in reader.pending():
                            messages.update(message)
                        continue
                    chunk = os.read(output, 1 << 16)
                    if not chunk:
                        selector.unregister(output)
                    *lines, partial = (partial + chunk).split(b"\n") if chunk else [partial, b""]
                    for line in lines:
                        if line.strip():
                            log.info("%s", line.decode(errors="replace").rstrip())
    finally:
        os.close(output)
    return messages


def _finish(target: str, messages: dict, exit_code: int | None = None) -> Any:
    """The call's result, or MLCallError: its exception, or how its process ended without one."""
    if "result" in messages:
        log.info("%s done in %.1f s (pid %s)", target, messages["seconds"], messages.get("started"))
        return messages["result"]
    if "error" in messages:
        raise MLCallError(f"{messages['error']}\n\n{target} failed in the ML environment:\n{messages['traceback']}")
    code = messages.get("exit", exit_code)
    if code is None:
        raise MLCallError(f"{target}: the ML worker stopped during the call; the next call starts a new one")
    ended = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
    raise MLCallError(f"{target}: its process {ended} before the call finished")
