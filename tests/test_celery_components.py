"""What scripts/airflow_local.py starts for the CeleryExecutor, decided before anything runs: Redis only for a broker on
this machine, bound to loopback and saving nothing; the workers, each with its own pid file and no log server."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import airflow_local
from testing.harness import require_tool

STANDALONE = ["scheduler", "dag-processor", "triggerer", "api-server"]


@pytest.fixture
def celery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDIT_RISK_HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("AIRFLOW_EXECUTOR", "CeleryExecutor")
    monkeypatch.setenv("CREDIT_RISK_CELERY_WORKERS", "3")


@pytest.mark.usefixtures("celery")
def test_a_local_broker_is_started_first_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    require_tool("redis-server")
    monkeypatch.setenv("CREDIT_RISK_CELERY_BROKER_URL", "redis://localhost:6390/0")
    commands = airflow_local.components()
    assert list(commands) == ["redis", *STANDALONE, "worker-1", "worker-2", "worker-3"]
    redis = commands["redis"]
    assert redis[redis.index("--bind") + 1] == "localhost" and redis[redis.index("--port") + 1] == "6390"
    assert redis[redis.index("--save") + 1] == "" and redis[redis.index("--appendonly") + 1] == "no"
    env = airflow_local.environment()
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == env["AIRFLOW__CELERY__RESULT_BACKEND"] == "redis://localhost:6390/0"


@pytest.mark.usefixtures("celery")
def test_workers_have_their_own_pid_file_and_no_log_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDIT_RISK_AIRFLOW_HOST", "0.0.0.0")  # exposed: the scheduler's log server runs, theirs not
    monkeypatch.setenv("CREDIT_RISK_CELERY_BROKER_URL", "redis://broker.internal:6379/0")
    commands = airflow_local.components()
    assert list(commands) == [*STANDALONE, "worker-1", "worker-2", "worker-3"]  # a remote broker: no Redis here
    workers = [commands[f"worker-{n}"] for n in (1, 2, 3)]
    assert {tuple(worker[1:3]) for worker in workers} == {("celery", "worker")}
    assert all("--skip-serve-logs" in worker for worker in workers)
    assert "--skip-serve-logs" not in commands["scheduler"]
    assert len({worker[worker.index("--pid") + 1] for worker in workers}) == 3


def test_the_local_executor_runs_no_broker_or_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDIT_RISK_HOME", str(tmp_path))
    monkeypatch.delenv("AIRFLOW_EXECUTOR", raising=False)
    assert list(airflow_local.components()) == STANDALONE
    assert airflow_local.environment()["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"


@pytest.mark.usefixtures("celery")
def test_without_redis_server_start_fails_at_once_saying_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RuntimeError, match="needs redis-server: run `make setup-monitoring`"):
        airflow_local.start(timeout=5)
    assert airflow_local.running() is None
