"""The gateway in front of real model servers: answers and errors pass through unchanged, a dead upstream is a 503
with a message, a model server starved of CPU loses no request, a bad routes file never loses the route, and a switch
under load drops no request."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from serving import client, process
from testing.harness import free_port, wait_for
from testing.loadgen import SteadyLoad


def write_routes(path: Path, upstream: str, version: int | None = None) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"upstream": upstream, "version": version, "slot": "test"}))
    tmp.replace(path)


def gateway_status(url: str) -> dict:
    return httpx.get(f"{url}/gateway/status", timeout=10).json()


def test_answers_and_errors_pass_through_unchanged(tmp_path: Path) -> None:
    with process.local_server(tmp_path) as server, process.local_gateway(server) as gateway:
        for method, path, body in [
            ("GET", "/v1/models/credit_risk", None),
            ("POST", "/v1/models/credit_risk:predict", b'{"instances": [{}]}'),
            ("POST", "/v1/models/credit_risk:predict", b"not json"),
            ("GET", "/v1/models/other/versions/3/metadata", None),
        ]:
            direct = httpx.request(method, server + path, content=body)
            through = httpx.request(method, gateway + path, content=body)
            assert (through.status_code, through.json()) == (direct.status_code, direct.json()), path
            assert through.status_code < 500
        assert "# TYPE" in httpx.get(f"{gateway}/monitoring/prometheus/metrics").text  # the model server's metrics
        assert gateway_status(gateway) == {"upstream": server, "version": None, "slot": None, "in_flight": {}}


def test_a_dead_upstream_is_a_503_with_a_message_and_counted(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with process.local_gateway(dead) as gateway:
        answer = httpx.post(f"{gateway}/v1/models/credit_risk:predict", content=b"{}")
        assert answer.status_code == 503
        assert answer.json()["error"].startswith(f"Model server unavailable ({dead})")
        metrics = httpx.get(f"{gateway}/gateway/metrics").text
    assert f'credit_risk_gateway_requests{{code="503",upstream="{dead}"}} 1' in metrics


def model_server_pid(model_dir: Path) -> int:
    """The pid of the model server serving `model_dir` (its command line names the folder)."""
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        if b"serving.server" in args and str(model_dir).encode() in args:
            return int(entry.name)
    raise LookupError(f"no model server for {model_dir}")


def test_a_model_server_starved_of_cpu_loses_no_request(tmp_path: Path) -> None:
    """Stopped (as a loaded machine stops a process for moments) past uvicorn's default 5 s keep-alive while requests
    wait on the gateway's pooled connections: once it runs again it answers every one, none is a 503 (it used to
    close those connections first, their requests unread)."""
    path = "/v1/models/credit_risk"  # no model: the model server itself answers 404

    def status(_: int) -> int:
        return httpx.get(gateway + path, timeout=30).status_code

    with process.local_server(tmp_path) as server, process.local_gateway(server) as gateway:
        pid = model_server_pid(tmp_path)
        with ThreadPoolExecutor(max_workers=16) as pool:
            assert set(pool.map(status, range(16))) == {404}  # the gateway now holds connections to the server
            os.kill(pid, signal.SIGSTOP)
            try:
                waiting = [pool.submit(status, i) for i in range(16)]
                time.sleep(6)
            finally:
                os.kill(pid, signal.SIGCONT)
            assert [w.result() for w in waiting] == [404] * 16


def test_a_bad_routes_file_keeps_the_route(tmp_path: Path) -> None:
    routes = tmp_path / "gateway.json"
    with process.local_server(tmp_path) as server:
        write_routes(routes, server, 7)
        with process.local_gateway(f"http://127.0.0.1:{free_port()}", "--routes", str(routes)) as gateway:
            assert gateway_status(gateway)["upstream"] == server  # the file wins over --upstream
            routes.write_text("{ torn")

            def read_the_torn_file() -> bool:
                return "credit_risk_gateway_route_errors 1" in httpx.get(f"{gateway}/gateway/metrics").text

            wait_for(read_the_torn_file, timeout=5, what="the torn routes file read", interval=0.1)
            assert gateway_status(gateway)["upstream"] == server
            assert httpx.get(f"{gateway}/v1/models/credit_risk").status_code == 404  # still forwarded to the server
            assert "credit_risk_gateway_live_version 7" in httpx.get(f"{gateway}/gateway/metrics").text


@pytest.mark.slow  # the trained_model fixture runs the TFX pipeline
def test_switching_the_route_under_load_drops_no_request(trained_model: Path, tmp_path: Path) -> None:
    source = process.saved_model_dir(trained_model)
    for version, folder in ((1, "blue"), (2, "green")):
        shutil.copytree(source, tmp_path / folder / str(version))
    routes = tmp_path / "gateway.json"
    body = json.dumps({"instances": [client.example_row()]}).encode()
    with process.local_server(tmp_path / "blue") as blue, process.local_server(tmp_path / "green") as green:
        write_routes(routes, blue, 1)
        with process.local_gateway(blue, "--routes", str(routes)) as gateway, SteadyLoad(gateway, body) as load:
            wait_for(lambda: load.ok >= 50, timeout=60, what="answers from blue")
            write_routes(routes, green, 2)
            wait_for(lambda: gateway_status(gateway)["upstream"] == green, timeout=5, what="the switch")
            switched_at = load.ok
            wait_for(lambda: load.ok >= switched_at + 50, timeout=60, what="answers from green")
            status = httpx.get(f"{gateway}/v1/models/credit_risk").json()["model_version_status"]
    assert load.failures == []
    assert [s["version"] for s in status] == ["2"]
