"""`make run-dag` checks what the deploy step will need before a run spends minutes training: it starts the model
server that the local backend deploys to when none answers, and fails in seconds when the docker backend has no
engine. (Handing the run to a running stack's Airflow: tests/test_end_to_end.py.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from data.generate import generate
from scripts import airflow_local
from serving import local_service
from testing import airflow_sandbox
from testing.harness import free_port
from tfx_modules.data_gate import dataset


def test_without_a_docker_engine_the_run_fails_in_seconds_before_training(tmp_path: Path) -> None:
    home = tmp_path / "var"
    env = {
        "PATH": "/usr/bin:/bin",
        "CREDIT_RISK_HOME": str(home),
        "CREDIT_RISK_DEPLOY_BACKEND": "docker",
        "DOCKER_HOST": f"unix://{tmp_path / 'no-engine.sock'}",  # whatever engine this machine may run
    }
    batch = dataset.write_canonical(generate(200, seed=3), tmp_path / "batch.csv")
    started = time.monotonic()

    result = airflow_sandbox.run_dag_process(env, batch, timeout=120)

    assert result.returncode == 1
    assert result.stdout.strip().splitlines()[-1] == (
        "failed: the deploy step needs a Docker engine (CREDIT_RISK_DEPLOY_BACKEND=docker) and none answers: "
        "start it, or set CREDIT_RISK_DEPLOY_BACKEND=local"
    )
    assert time.monotonic() - started < 60
    assert not (home / "pipeline").exists() and not (home / "incoming").exists()  # nothing delivered, nothing trained


def test_with_the_local_backend_a_missing_model_server_is_started(tmp_path: Path, monkeypatch) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("CREDIT_RISK_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("CREDIT_RISK_SERVING_URL", url)
    monkeypatch.setenv("CREDIT_RISK_MODEL_SERVER_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("CREDIT_RISK_DEPLOY_BACKEND", "local")
    assert not local_service.answers(url)
    said: list[str] = []
    try:
        airflow_local.prepare_deploy(said.append)

        assert local_service.answers(url)
        assert said == [
            f"no model server answers at {url}, which the deploy step needs: starting one",
            f"model server: {url} (make down stops it)",
        ]
        airflow_local.prepare_deploy(said.append)  # it answers now: nothing to start
        assert len(said) == 2
    finally:
        assert local_service.stop()


def test_an_unknown_backend_fails_before_training(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CREDIT_RISK_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("CREDIT_RISK_DEPLOY_BACKEND", "kubernetes")
    with pytest.raises(RuntimeError, match="unknown deploy backend 'kubernetes'"):
        airflow_local.prepare_deploy(print)
