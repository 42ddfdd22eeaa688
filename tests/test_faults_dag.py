"""kill -9 mid-run, in real retraining DAG runs: of a TFX component (the Trainer, in its process forked by the warm
ML worker; `airflow dags test` as `make run-dag` runs it), and of the scheduler of a running Airflow (as `make up`
runs it, then started again). The run completes (the killed task's retry), the batch is filed once, the lineage
names it once, and the next run finds nothing to do."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from common import config
from data.generate import generate
from scripts import airflow_local
from testing import airflow_sandbox
from testing.fault_drills import kill9
from testing.harness import airflow_settings, wait_for
from tfx_modules.data_gate import dataset
from tfx_modules.ml_worker.protocol import lock_path, log_path

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def children(pid: int, named: bytes = b"") -> list[int]:
    """The processes whose parent is `pid` (and whose command line has `named`)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and named in command:
            found.append(int(stat.parent.name))
    return found


def assert_filed_once_and_trained_once(home: Path, served: dict) -> None:
    ledger = json.loads((home / "state" / "batches.json").read_text())
    (entry,) = ledger.values()
    assert (entry["name"], entry["status"], entry["rows"]) == ("first.csv", "accepted", 3000)
    (model,) = json.loads((home / "state" / "lineage.json").read_text())["models"]
    assert model["batches"] == list(ledger)
    assert [p.name for p in (home / "models" / config.MODEL_NAME).iterdir()] == [str(model["version"])]
    live = [s for s in served["model_version_status"] if s["state"] == "AVAILABLE"]
    assert [s["version"] for s in live] == [str(model["version"])]


def served_versions(url: str) -> dict:
    return httpx.get(f"{url}/v1/models/{config.MODEL_NAME}", timeout=10).json()


def test_kill_9_of_the_trainer_mid_run(tmp_path: Path) -> None:
    home = tmp_path / "home"
    batch = dataset.write_canonical(generate(3000, seed=21), tmp_path / "first.csv")
    runs: list = []
    with airflow_sandbox.sandbox(home) as sandbox:
        env = {"PATH": "/usr/bin:/bin", **sandbox, "CREDIT_RISK_STATSD_PORT": "9"}  # nothing listens on UDP 9
        run = threading.Thread(target=lambda: runs.append(airflow_sandbox.run_dag_process(env, batch, timeout=900)))
        run.start()
        trainer = home / "pipeline" / "Trainer" / ".system" / "executor_execution"
        wait_for(trainer.exists, 600, "the Trainer to start", interval=0.1)
        worker = int(lock_path(home).read_text())
        # the one call under way, the Trainer's, forked by the worker
        (call,) = wait_for(lambda: children(worker), 60, "the Trainer's call to start", interval=0.1)
        kill9(call)
        run.join(900)
        (first,) = runs
        output = first.stdout + first.stderr
        assert first.returncode == 0, output[-5000:]
        assert first.stdout.strip().splitlines()[-1].startswith("retrained version=")
        killed = "tfx_modules.node_runner:run_node: its process was killed by SIGKILL before the call finished"
        assert output.count(killed) >= 1  # the Trainer's first try; its retry trained the model

        second = airflow_sandbox.run_dag_process(env, None, timeout=900)
        assert second.returncode == 0, (second.stdout + second.stderr)[-5000:]
        assert second.stdout.strip().splitlines()[-1].startswith("skipped: ")
        served = served_versions(sandbox["CREDIT_RISK_SERVING_URL"])
    assert_filed_once_and_trained_once(home, served)


def test_kill_9_of_the_scheduler_mid_run(tmp_path: Path) -> None:
    home = tmp_path / "home"
    batch = dataset.write_canonical(generate(3000, seed=21), tmp_path / "first.csv")
    env = {
        **airflow_settings(home),
        "CREDIT_RISK_STATSD_PORT": "9",
        "CREDIT_RISK_MONITOR_SCHEDULE": "none",
        # A task whose supervisor died with the scheduler is failed (and retried) after this long without heartbeat
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
    }
    first_session = None
    try:
        with airflow_sandbox.running_airflow(home, env):
            first_session = airflow_local.running()
            airflow = airflow_local.api()
            airflow.unpause(airflow_local.DAG_ID)
            incoming = config.settings().incoming_dir
            incoming.mkdir(parents=True, exist_ok=True)
            (incoming / ".first.csv.partial").write_bytes(batch.read_bytes())
            (incoming / ".first.csv.partial").replace(incoming / "first.csv")
            run_id = airflow.trigger(airflow_local.DAG_ID, {"batch": "first.csv"})
            transform = home / "pipeline" / "Transform" / ".system" / "executor_execution"
            wait_for(transform.exists, 600, "the Transform to start", interval=0.2)
            (scheduler,) = children(first_session, b"scheduler")
            killed = time.monotonic()
            kill9(scheduler)
            wait_for(lambda: airflow_local.running() is None, 120, "the rest of Airflow to stop with it")
            airflow_local.start(240)  # as `make up` again
            back = time.monotonic() - killed
            state = airflow_local.api().follow(airflow_local.DAG_ID, run_id, 1800)
            finished = time.monotonic() - killed
            print(f"Airflow back {back:.0f} s after the kill, the run {state} {finished:.0f} s after it")
            assert state == "success"
            outcome = json.loads((config.settings().state_dir / "last_run.json").read_text())
            assert outcome["run_id"] == run_id and outcome["outcome"].startswith("retrained version=")
            assert airflow_local.trigger(None, {}, timeout=900).startswith("skipped: ")
            served = served_versions(config.settings().serving_url)
    finally:
        if first_session is not None:  # whatever of the killed scheduler's session still runs
            with contextlib.suppress(ProcessLookupError):
                os.killpg(first_session, signal.SIGKILL)
    assert_filed_once_and_trained_once(home, served)
    # the dead scheduler's task ended, its client went away, so the worker stopped its call before the rerun
    assert "went away: call stopped" in log_path(home).read_text()
