"""How Airflow tasks and the warm ML worker talk: the worker's address and files, and the messages of a call.

A call is one connection. The client sends the request, {"call": "module:function", "args": [...], "env": {...},
"cwd": ..., "tmp": ...}, with the write end of its output pipe attached (SCM_RIGHTS); the process running the call
answers {"started": pid}, then {"result": value, "seconds": s} or {"error": text, "traceback": text, "seconds": s};
the worker adds {"exit": code} once that process is gone. Messages are JSON, one per line. Standard library only:
the Airflow environment (client) and the ML environment (worker) both import it.
"""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

MAX_FDS = 4


def address(home: Path) -> str:
    """The worker's socket: in Linux's abstract namespace (no path-length limit, gone when the worker dies), one per
    CREDIT_RISK_HOME."""
    return "\0credit-risk-ml-worker-" + hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:32]


def run_dir(home: Path) -> Path:
    return home / "run"


def lock_path(home: Path) -> Path:
    """Locked (flock) by the live worker for its whole life, and holding its pid: one worker per CREDIT_RISK_HOME."""
    return run_dir(home) / "ml-worker.lock"


def log_path(home: Path) -> Path:
    """The worker's own output: its start-up (TensorFlow's import-time lines land here, not in task logs)."""
    return run_dir(home) / "ml-worker.log"


def send(sock: socket.socket, message: dict, fds: tuple[int, ...] = ()) -> None:
    data = (json.dumps(message) + "\n").encode()
    sent = socket.send_fds(sock, [data], list(fds)) if fds else 0
    sock.sendall(data[sent:])


class Reader:
    """Messages from a socket, one JSON object per line; file descriptors that arrive with them collect in `fds`."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fds: list[int] = []
        self._buffer = b""
        self.closed = False

    def read(self) -> dict | None:
        """The next message; None once the peer has closed (blocks unless `pending()` says one is buffered)."""
        while b"\n" not in self._buffer:
            if not self.receive():
                return None
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def receive(self) -> bool:
        """Read what the socket has (one recv); False at end of stream."""
        try:
            data, fds, _, _ = socket.recv_fds(self.sock, 1 << 16, MAX_FDS)
        except ConnectionResetError:
            data, fds = b"", []
        self.fds.extend(fds)
        self._buffer += data
        self.closed = not data
        return bool(data)

    def pending(self) -> list[dict]:
        """The complete messages already received, without blocking."""
        messages = []
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            messages.append(json.loads(line))
        return messages
