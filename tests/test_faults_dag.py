"""kill -9 of a TFX component mid-run: a real retraining DAG run (`airflow dags test`, as `make run-dag` runs it)
whose Trainer, running in its process forked by the warm ML worker, is killed while it trains. The task fails,
its retry trains again, the run deploys; the batch is filed once, the lineage names it once, and the next run finds
nothing to do."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from data.generate import generate
from monitoring.fault_drills import kill9
from monitoring.testing import wait_for
from scripts import airflow_local
from tfx_modules import config, dataset
from tfx_modules.ml_protocol import lock_path

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_kill_9_of_the_trainer_mid_run(tmp_path: Path) -> None:
    home = tmp_path / "home"
    batch = dataset.write_canonical(generate(3000, seed=21), tmp_path / "first.csv")
    runs: list = []
    with airflow_local.sandbox(home) as sandbox:
        env = {"PATH": "/usr/bin:/bin", **sandbox, "CREDIT_RISK_STATSD_PORT": "9"}  # nothing listens on UDP 9
        run = threading.Thread(target=lambda: runs.append(airflow_local.run_dag_process(env, batch, timeout=900)))
        run.start()
        trainer = home / "pipeline" / "Trainer" / ".system" / "executor_execution"
        wait_for(trainer.exists, 600, "the Trainer to start", interval=0.1)
        time.sleep(1.0)  # into its training
        worker = int(lock_path(home).read_text())
        (call,) = children(worker)  # the one call under way: the Trainer's
        kill9(call)
        run.join(900)
        (first,) = runs
        output = first.stdout + first.stderr
        assert first.returncode == 0, output[-5000:]
        assert first.stdout.strip().splitlines()[-1].startswith("retrained version=")
        killed = "tfx_modules.node_runner:run_node: its process was killed by SIGKILL before the call finished"
        assert output.count(killed) >= 1  # the Trainer's first try; its retry trained the model

        second = airflow_local.run_dag_process(env, None, timeout=900)
        assert second.returncode == 0, (second.stdout + second.stderr)[-5000:]
        assert second.stdout.strip().splitlines()[-1].startswith("skipped: ")
        served = httpx.get(f"{sandbox['CREDIT_RISK_SERVING_URL']}/v1/models/{config.MODEL_NAME}", timeout=10).json()

    ledger = json.loads((home / "state" / "batches.json").read_text())
    (entry,) = ledger.values()
    assert (entry["name"], entry["status"], entry["rows"]) == ("first.csv", "accepted", 3000)
    (model,) = json.loads((home / "state" / "lineage.json").read_text())["models"]
    assert model["batches"] == list(ledger)
    assert [p.name for p in (home / "models" / config.MODEL_NAME).iterdir()] == [str(model["version"])]
    live = [s for s in served["model_version_status"] if s["state"] == "AVAILABLE"]
    assert [s["version"] for s in live] == [str(model["version"])]
