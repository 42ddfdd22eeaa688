"""The compose stack's errors a person can act on: with no container registry, `make compose-up` without AIRGAP=1
says so in a sentence naming `make compose-up AIRGAP=1` (it printed docker's usage page for `unknown shorthand flag:
'f' in -f`), before any engine is started; every compose call goes through the one compose command."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest

from common.config import PROJECT_ROOT
from containers import images
from testing.harness import free_port
from tests.conftest import ml_env
from tests.test_compose import filled_env


class Registry(BaseHTTPRequestHandler):
    """Answers as a registry's /v2/ does to a client without a token."""

    def do_GET(self) -> None:
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Bearer realm="http://127.0.0.1/token"')
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def registry() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v2/"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("command", [["containers.stack", "up"], ["containers.images"]])
def test_no_registry_names_the_airgapped_set(command: list[str], tmp_path: Path):
    closed = f"http://127.0.0.1:{free_port()}/v2/"  # nothing listens: as a host that reaches no registry
    env = ml_env(tmp_path, CREDIT_RISK_REGISTRY_URL=closed)
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", *command], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
    )
    assert time.monotonic() - start < 20
    assert result.returncode == 1
    assert f"no container registry answers ({closed}: [Errno 111] Connection refused)" in result.stderr
    assert "make compose-up AIRGAP=1" in result.stderr
    assert "Usage" not in result.stderr and "unknown shorthand flag" not in result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stdout == ""


def test_a_registry_that_answers_passes(registry: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CREDIT_RISK_REGISTRY_URL", registry)
    images.require_registry()  # a 401 from /v2/ is an answer


def test_the_compose_command_reads_the_stack_without_an_engine(tmp_path: Path):
    """The command every compose call starts with takes `-f` (a CLI without the compose plugin did not)."""
    files = ["-f", str(images.COMPOSE_FILE), "-f", str(images.OVERRIDE)]
    result = subprocess.run(
        [*images.compose_command(), "--env-file", str(filled_env(tmp_path)), *files, "config", "-q"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
