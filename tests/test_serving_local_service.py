"""`make up`'s model server: started and stopped from the Airflow environment, fed by the local deploy step."""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from common.config import PROJECT_ROOT, settings
from serving import client, deploy, grpc_client, local_service, process
from testing.harness import AIRFLOW_PYTHON, free_port

pytestmark = pytest.mark.slow  # the trained_model fixture runs the TFX pipeline


def airflow_side(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run the service CLI with the Airflow venv's Python: it must need nothing but the standard library."""
    return subprocess.run(
        [str(AIRFLOW_PYTHON), "-m", "serving.local_service", *command.split()],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_up_deploy_predict_down(trained_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make up`'s way (`up --grpc`, free ports here for `make up`'s fixed 8500 and 8503): the gateway answers REST
    and gRPC once a version is deployed."""
    url, grpc_port = f"http://127.0.0.1:{free_port()}", free_port()
    monkeypatch.setenv("CREDIT_RISK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CREDIT_RISK_SERVING_URL", url)
    monkeypatch.setenv("CREDIT_RISK_MODEL_SERVER_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("CREDIT_RISK_SERVING_GRPC_PORT", str(grpc_port))
    monkeypatch.setenv("CREDIT_RISK_MODEL_SERVER_GRPC_PORT", str(free_port()))
    monkeypatch.setenv("PYTHONPATH", str(PROJECT_ROOT))
    env = dict(os.environ)
    shutil.copytree(process.saved_model_dir(trained_model), settings().model_dir / "4")

    up = airflow_side("up --grpc", env)
    try:
        assert up.returncode == 0, up.stderr
        assert url in up.stdout and f"gRPC 127.0.0.1:{grpc_port}" in up.stdout
        pids = {name: local_service.running(name) for name in ("server", "gateway")}
        assert None not in pids.values(), pids
        assert airflow_side("up --grpc", env).returncode == 0
        assert {name: local_service.running(name) for name in pids} == pids  # idempotent: the same two processes
        result = deploy.redeploy(backend="local", timeout=60)
        assert (result["status"], result["live"]) == ("deployed", 4), result
        (prediction,) = client.predict(url, [client.example_row()])
        assert 0.0 <= prediction["probability"] <= 1.0
        (over_grpc,) = grpc_client.predict(f"127.0.0.1:{grpc_port}", [client.example_row()], timeout=30)
        assert over_grpc["probability"] == pytest.approx(prediction["probability"], abs=1e-6)
    finally:
        down = airflow_side("down", env)
    assert down.returncode == 0 and "stopped" in down.stdout, down.stderr
    assert local_service.running("server") is None and local_service.running("gateway") is None
    with pytest.raises(client.ServingError):
        client.predict(url, [client.example_row()])


class _NotAModelServer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_error(404, "try /metrics")  # what the StatsD bridge answers, in HTML

    def log_message(self, *args: object) -> None:
        """Quiet."""


def test_a_model_server_port_taken_by_another_server_fails_the_start(tmp_path: Path, monkeypatch) -> None:
    """Another server's 404 is no model server answering: start() waits for its own server, which cannot bind."""
    squatter = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotAModelServer)
    threading.Thread(target=squatter.serve_forever, daemon=True).start()
    taken = f"http://127.0.0.1:{squatter.server_address[1]}"
    monkeypatch.setenv("CREDIT_RISK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CREDIT_RISK_SERVING_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("CREDIT_RISK_MODEL_SERVER_URL", taken)
    try:
        assert not local_service.answers(taken)
        with pytest.raises(RuntimeError, match=r"the server exited; see .*server\.log"):
            local_service.start(timeout=120)
        assert "Address already in use" in (settings().serving_dir.parent / "server.log").read_text()
        assert local_service.running("gateway") is None
    finally:
        squatter.shutdown()
        local_service.stop()
