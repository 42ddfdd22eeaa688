"""The retraining DAG on Airflow's CeleryExecutor: Redis (broker and result backend), the scheduler, dag-processor,
triggerer, api-server and two Celery workers (concurrency 1 each), all started by scripts/airflow_local.py on free
ports of 127.0.0.1 under a private CREDIT_RISK_HOME. A generated batch triggered through the REST API trains, pushes
and deploys a model, both workers ran some of its tasks, and their ML tasks went to the one warm ML worker. Cleared,
the run reruns and trains nothing twice.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from data.generate import generate
from scripts import airflow_local
from testing import airflow_sandbox
from testing.harness import airflow_settings, free_port, require_tool
from tfx_modules.data_gate import dataset
from tfx_modules.ml_worker.protocol import log_path

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # a 2-core machine under load: ~14 min seen

WORKERS = ("worker-1", "worker-2")
STANDALONE = ("scheduler", "dag-processor", "triggerer", "api-server")
# Celery's line for each task a worker takes from the queue (Airflow's CeleryExecutor sends one per task instance)
RECEIVED = re.compile(r"Task \S+\[([0-9a-f-]{36})\] received")
# Airflow's line as the worker starts a task instance: its log file, relative to AIRFLOW_HOME/logs
EXECUTING = re.compile(r"Executing workload in Celery: .*log_path='([^']+)'")
# tfx_modules.ml_worker.client's line in a task's log for each ML-environment call, and the warm ML worker's for
# each call
CALL_DONE = re.compile(r" done in [\d.]+ s \(pid (\d+)\)")
WARM_CALL = re.compile(r" -> pid (\d+)")


def test_two_celery_workers_run_the_retraining_dag(tmp_path: Path):
    require_tool("redis-server")
    broker_port = free_port()
    env = {
        **airflow_settings(tmp_path),
        "AIRFLOW_EXECUTOR": "CeleryExecutor",
        "CREDIT_RISK_CELERY_BROKER_URL": f"redis://127.0.0.1:{broker_port}/0",
        "CREDIT_RISK_CELERY_WORKERS": str(len(WORKERS)),
        "CREDIT_RISK_STATSD_PORT": str(free_port(socket.SOCK_DGRAM)),
    }
    batch = dataset.write_canonical(generate(2000, seed=21), tmp_path / "batch.csv")
    with airflow_sandbox.running_airflow(tmp_path, env):
        assert set(airflow_local.components()) == {"redis", *STANDALONE, *WORKERS}
        assert redis_answers(broker_port)
        run = airflow_local.triggered_run(batch, {}, timeout=900)
        logs = {name: (tmp_path / "airflow" / f"{name}.log").read_text() for name in WORKERS}
        # Cleared (the UI's Clear), the same run reruns every task and finds the model it trained: none trained twice
        rerun = airflow_local.rerun(run["dag_run_id"], timeout=600)

    outcome = run["outcome"]
    assert re.fullmatch(r"retrained version=\d+", outcome), outcome
    assert rerun["outcome"] == f"skipped: this run already trained version {outcome.removeprefix('retrained version=')}"
    assert len(json.loads((tmp_path / "state" / "lineage.json").read_text())["models"]) == 1
    received = {name: RECEIVED.findall(log) for name, log in logs.items()}
    print({name: len(tasks) for name, tasks in received.items()})
    assert all(received.values()), f"a worker ran no task: {received}"
    assert not set(received["worker-1"]) & set(received["worker-2"]), "a task was received by both workers"
    # Both workers' tasks handed their ML calls to the one warm ML worker of this CREDIT_RISK_HOME
    ml_worker_log = log_path(tmp_path).read_text()
    assert ml_worker_log.count(" ready for ") == 1, ml_worker_log[-2000:]
    warm = set(WARM_CALL.findall(ml_worker_log))
    for name, log in logs.items():
        task_logs = tmp_path / "airflow" / "logs"
        served = {path: CALL_DONE.findall((task_logs / path).read_text()) for path in EXECUTING.findall(log)}
        assert any(set(pids) & warm for pids in served.values()), f"{name}: no call went to the ML worker: {served}"
    with pytest.raises(ConnectionRefusedError):  # Redis stopped with the rest
        redis_answers(broker_port)


def redis_answers(port: int) -> bool:
    """Redis' inline PING on 127.0.0.1:`port`."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"PING\r\n")
        return conn.recv(16) == b"+PONG\r\n"
