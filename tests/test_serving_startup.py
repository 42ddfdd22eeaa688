"""The server's ready line is a promise: whoever reads the address may connect at once."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from serving import process


def test_the_announced_address_accepts_connections_before_the_event_loop_runs(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "serving.server", "--model-dir", str(tmp_path), "--port", "0"]
    proc = subprocess.Popen(cmd, env=process.server_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = process.announced_url(line)
        assert url, line
        proc.send_signal(signal.SIGSTOP)  # frozen right after announcing: only the kernel can take the connection
        address = urlsplit(url)
        socket.create_connection((address.hostname, address.port), timeout=5).close()
        proc.send_signal(signal.SIGCONT)
        status = httpx.get(f"{address.geturl()}/v1/models/credit_risk", timeout=30)
        assert status.status_code == 404 and "error" in status.json()
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        proc.wait(timeout=30)
