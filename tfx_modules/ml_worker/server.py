"""The warm ML worker: one long-lived process per CREDIT_RISK_HOME with TensorFlow, TFX, Beam, TFDV and TFMA
imported, which forks one child per call from an Airflow task (`tfx_modules.ml_worker.client.call`).

Why: a fresh interpreter per task spent 8-12 s importing TensorFlow and TFX before a component started. A fork of
this process starts a call in milliseconds with all of that loaded, and each call still gets a process of its own:
the client's environment, working directory and a private TMPDIR (deleted afterwards), its own session (killed
when the client goes away), side by side with other calls, and a crash takes down only that call. Project modules
are not kept: each child imports them afresh, so an edit to the project's code counts from the next call.

    python -m tfx_modules.ml_worker.server            # serve; exits after CREDIT_RISK_ML_WORKER_IDLE_SECONDS (0: never)
    python -m tfx_modules.ml_worker.server --one FD   # run the one call that arrives on the inherited socket FD
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib
import json
import os
import selectors
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import IO

from common.config import PROJECT_ROOT, settings
from tfx_modules.ml_worker.protocol import Reader, address, lock_path, send

# What the pipeline's components, the gate and the reports import; third-party only (see the module docstring).
PRELOAD = (
    "tensorflow",
    "tf_keras",
    "apache_beam",
    "pandas",
    "tensorflow_data_validation",
    "tensorflow_transform",
    "tensorflow_model_analysis",
    "tensorflow_decision_forests",  # the trees' inference ops, for the Evaluator
    "ydf",  # the Trainer's trees
    "ml_metadata",
    "tfx.v1",
    "tfx.dsl.compiler.compiler",
    "tfx.orchestration.local.runner_utils",
    "tfx.orchestration.portable.launcher",
    "matplotlib.figure",
)
REQUEST_KEYS = {"call", "args", "env", "cwd", "tmp"}
REQUEST_SECONDS = 10.0  # a client that connects but sends no request is dropped after this long
LOCK_TRIES = 20  # a client probing the lock holds it for microseconds: retry before concluding a worker runs


def run_call(conn: socket.socket, request: dict, output: int) -> int:
    """Run the request's call in this process, as the client would have in a fresh process of its own: its
    environment, working directory, a private TMPDIR, stdout and stderr into the client's pipe `output`. Reports on
    `conn`; returns the exit status."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(output)
    stdin = os.open(os.devnull, os.O_RDONLY)
    os.dup2(stdin, 0)
    os.close(stdin)
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    os.environ.clear()
    os.environ.update({**request["env"], "TMPDIR": request["tmp"]})
    tempfile.tempdir = request["tmp"]
    os.chdir(request["cwd"])
    _forget_project_modules()
    send(conn, {"started": os.getpid()})
    started = time.perf_counter()
    try:
        module, _, name = request["call"].partition(":")
        answer = {"result": getattr(importlib.import_module(module), name)(*request["args"])}
        json.dumps(answer)  # a value JSON cannot carry fails the call here, with the reason
    except BaseException as error:
        answer = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    sys.stdout.flush()
    sys.stderr.flush()
    send(conn, {**answer, "seconds": round(time.perf_counter() - started, 3)})
    return 0 if "result" in answer else 1


def _forget_project_modules() -> None:
    """Drop the project's modules the worker imported (configuration, the feature spec): the call imports them from
    disk as they are now."""
    root, venv = f"{PROJECT_ROOT}{os.sep}", f"{sys.prefix}{os.sep}"
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None) or ""
        if name != "__main__" and path.startswith(root) and not path.startswith(venv):
            del sys.modules[name]


def _lock(home: Path) -> IO[str] | None:
    """Take the worker lock of `home` and write this pid into it; None when another worker holds it."""
    path = lock_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    for _ in range(LOCK_TRIES):
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            time.sleep(0.05)
            continue
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        return handle
    handle.close()
    return None


def _peer_uid(conn: socket.socket) -> int:
    _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid


class Server:
    """The accept loop: one child per call, its exit reported to the client, an idle exit. Single-threaded (a
    selector over the listener, the calls' connections and a SIGCHLD wake-up pipe), so forking is safe."""

    def __init__(self, home: Path, lock: IO[str], idle_seconds: float) -> None:
        self.lock, self.idle_seconds = lock, idle_seconds
        self.calls: dict[int, tuple[socket.socket, str]] = {}  # child pid -> (client connection, its TMPDIR)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(address(home))
        self.listener.listen(16)
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.selector.register(self.wake_read, selectors.EVENT_READ)
        self.last_call = time.monotonic()

    def serve(self) -> None:
        signal.set_wakeup_fd(self.wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # the wake-up pipe does the work
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            while self.calls or not self.idle_seconds or time.monotonic() - self.last_call < self.idle_seconds:
                idle = not self.calls and self.idle_seconds
                timeout = max(self.last_call + self.idle_seconds - time.monotonic(), 0) if idle else None
                for key, _ in self.selector.select(timeout):
                    if key.fileobj is self.listener:
                        self._accept()
                    elif key.fileobj == self.wake_read:
                        self._reap()
                    else:
                        self._client_activity(key.fileobj, key.data)
            print(f"idle for {self.idle_seconds:.0f}s: exiting", flush=True)
        finally:
            for pid in self.calls:
                self._kill_session(pid)

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        reader = Reader(conn)
        try:
            conn.settimeout(REQUEST_SECONDS)
            if _peer_uid(conn) != os.getuid():
                raise PermissionError("a call from another user")
            request = reader.read()
            if not isinstance(request, dict) or not request.keys() >= REQUEST_KEYS or len(reader.fds) != 1:
                raise ValueError("no request with an output pipe")
            conn.settimeout(None)
        except (OSError, ValueError) as error:
            print(f"refused a connection: {error}", flush=True)
            for fd in reader.fds:
                os.close(fd)
            conn.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as error:  # out of memory or processes: this call fails, the worker and other calls go on
            with contextlib.suppress(OSError):
                send(conn, {"error": f"the ML worker could not fork: {error}", "traceback": ""})
            os.close(reader.fds[0])
            conn.close()
            return
        if pid == 0:
            self._child(conn, request, reader.fds[0])
        os.close(reader.fds[0])
        self.calls[pid] = (conn, request["tmp"])
        self.selector.register(conn, selectors.EVENT_READ, pid)
        self.last_call = time.monotonic()
        print(f"{request['call']} -> pid {pid}", flush=True)

    def _child(self, conn: socket.socket, request: dict, output: int) -> None:
        """In the forked child: shed the worker's descriptors and signal handlers, run the call, exit."""
        status = 70
        try:
            os.setsid()
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            self.selector.close()
            self.listener.close()
            self.lock.close()
            os.close(self.wake_read)
            os.close(self.wake_write)
            for other, _ in self.calls.values():
                other.close()
            status = run_call(conn, request, output)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)

    def _client_activity(self, conn: socket.socket, pid: int) -> None:
        """A client sends nothing after its request: readable means it went away, so its call is abandoned."""
        try:
            gone = not conn.recv(4096)
        except OSError:
            gone = True
        if gone:
            self.selector.unregister(conn)
            self._kill_session(pid)
            print(f"client of pid {pid} went away: call stopped", flush=True)

    def _reap(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_read, 4096):
                pass
        while self.calls:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn, tmp = self.calls.pop(pid)
            self._kill_session(pid)  # whatever the call left running
            code = os.waitstatus_to_exitcode(status)
            with contextlib.suppress(OSError):
                send(conn, {"exit": code})
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(conn)
            conn.close()
            shutil.rmtree(tmp, ignore_errors=True)  # the client removes it too, unless it was killed
            self.last_call = time.monotonic()
            print(f"pid {pid} exited with {code}", flush=True)

    @staticmethod
    def _kill_session(pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def serve(home: Path, idle_seconds: float) -> None:
    lock = _lock(home)
    if lock is None:
        print(f"another worker serves {home}", flush=True)
        return
    started = time.perf_counter()
    for module in PRELOAD:
        importlib.import_module(module)
    print(f"pid {os.getpid()} ready for {home}: preloaded in {time.perf_counter() - started:.1f}s", flush=True)
    Server(home, lock, idle_seconds).serve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", type=int, metavar="FD", help="run one call received on this inherited socket")
    args = parser.parse_args()
    if args.one is None:
        config = settings()
        serve(config.home, config.ml_worker_idle_seconds)
        return
    conn = socket.socket(fileno=args.one)
    reader = Reader(conn)
    request = reader.read()
    if request is None or len(reader.fds) != 1:
        sys.exit("no request with an output pipe")
    os._exit(run_call(conn, request, reader.fds[0]))


if __name__ == "__main__":
    main()
