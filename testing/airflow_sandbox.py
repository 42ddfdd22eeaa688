"""A DAG run's whole state in a folder of its own, for tests and benchmarks: the project's and Airflow's state under
one home, a local model server on a free port, and the run started as `make run-dag` would start it."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

from common.config import MODEL_NAME
from scripts import airflow_local
from tfx_modules.ml_worker import client as ml_client


@contextlib.contextmanager
def sandbox(home: Path) -> Iterator[dict[str, str]]:
    """Environment variables that put a DAG run's whole state (the project's and Airflow's) under `home` and deploy
    to a local model server started here on a free port (stopped afterwards, as is the warm ML worker of `home`),
    swapping directly (a staged rollout waits for live traffic; its own test sends some)."""
    from serving.process import local_server

    serving_dir = home / "serving" / MODEL_NAME
    serving_dir.mkdir(parents=True, exist_ok=True)
    with local_server(serving_dir) as url:
        try:
            yield {
                "CREDIT_RISK_HOME": str(home),
                "AIRFLOW_HOME": str(home / "airflow"),
                "CREDIT_RISK_DEPLOY_BACKEND": "local",
                "CREDIT_RISK_ROLLOUT_STAGES": "direct",
                "CREDIT_RISK_SERVING_URL": url,
            }
        finally:
            ml_client.stop(home)


@contextlib.contextmanager
def running_airflow(home: Path, env: Mapping[str, str], timeout: float = 240) -> Iterator[None]:
    """This process's environment set to `sandbox(home)` and `env` while the local Airflow runs
    (`airflow_local.start()`); every process stopped afterwards, also on failure."""
    with sandbox(home) as sandboxed, contextlib.ExitStack() as restore:
        saved = dict(os.environ)
        restore.callback(lambda: (os.environ.clear(), os.environ.update(saved)))
        os.environ.update({**sandboxed, **env})
        restore.callback(airflow_local.stop)
        airflow_local.start(timeout)
        yield


def run_dag_process(
    env: Mapping[str, str],
    batch: Path | None = None,
    conf: dict | None = None,
    timeout: float | None = None,
    command_name: str = "run-dag",
) -> subprocess.CompletedProcess:
    """`run-dag [batch] --conf conf` (or `run-monitor --conf conf`) in a fresh process of the Airflow environment,
    with exactly `env`; output captured (its last stdout line is the outcome)."""
    command = [
        str(airflow_local.AIRFLOW.parent / "python"),
        airflow_local.__file__,
        command_name,
        *([str(batch)] if batch else []),
    ]
    command += ["--conf", json.dumps(conf or {})]
    return subprocess.run(command, env=dict(env), capture_output=True, text=True, timeout=timeout)
