"""Retraining started by the live monitor's Asset events, end to end on a running Airflow (as `make up` runs it): a
live-drift event, then a performance-decay event, each posted with the extra the monitoring DAG gives it, makes the
scheduler start a retraining run of its own (no trigger, no schedule) that trains on the newer labelled batch, and
says why. Checked through each run's recorded outcome line and the gate's reason (dags/decisions/triggers.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from common import config
from common.records.batch_ledger import safe_name
from containers.airflow_api import AirflowAPI
from data.generate import generate
from scripts import airflow_local
from testing import airflow_sandbox
from testing.harness import airflow_settings, wait_for
from tfx_modules.data_gate import dataset

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]  # three TFX trainings through a running Airflow

DRIFT = {"drifted": ["person_income", "score"], "run_id": "monitor-1"}
DECAY = {"reason": "realized AUC 0.710 of version 2 is below the blessing floor 0.800", "run_id": "monitor-2"}


def asset_triggered_run(airflow: AirflowAPI, asset: str, extra: dict, seen: set[str]) -> str:
    """Post an event of `asset` as the monitoring DAG's outlet would; the id of the retraining run the scheduler
    starts for it (one not in `seen`)."""
    (found,) = airflow.call(f"/api/v2/assets?name_pattern={asset}")["assets"]
    airflow.call("/api/v2/assets/events", "POST", {"asset_id": found["id"], "extra": extra})
    path = f"/api/v2/dags/{airflow_local.DAG_ID}/dagRuns?run_type=asset_triggered"

    def new_run() -> str | None:
        ids = {run["dag_run_id"] for run in airflow.call(path)["dag_runs"]} - seen
        return ids.pop() if len(ids) == 1 else None

    run_id = wait_for(new_run, 120, f"the retraining run for the {asset} event", interval=1)
    seen.add(run_id)
    return run_id


def recorded(run_id: str) -> dict:
    """The outcome the run recorded (common/records/batch_ledger.py's `record_run`)."""
    return json.loads((config.settings().state_dir / "runs" / f"{safe_name(run_id)}.json").read_text())


def deliver(incoming: Path, batch: Path) -> None:
    """Into the incoming folder whole (a dot file renamed), as a batch arrives: the next run's intake takes it."""
    incoming.mkdir(parents=True, exist_ok=True)
    partial = incoming / f".{batch.name}.partial"
    partial.write_bytes(batch.read_bytes())
    partial.replace(incoming / batch.name)


def version_of(outcome: str) -> int:
    assert re.fullmatch(r"retrained version=\d+", outcome), outcome
    return int(outcome.removeprefix("retrained version="))


def test_drift_then_decay_events_each_start_a_retraining_run_that_says_why(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**airflow_settings(home), "CREDIT_RISK_STATSD_PORT": "9", "CREDIT_RISK_MONITOR_SCHEDULE": "none"}
    batches = [dataset.write_canonical(generate(2000, seed=s), tmp_path / f"b{s}.csv") for s in (41, 42, 43)]
    cases = [
        (batches[1], "credit_risk_live_drift", DRIFT, "live drift in person_income, score (monitoring run monitor-1)"),
        (
            batches[2],
            "credit_risk_performance_decay",
            DECAY,
            f"performance decay: {DECAY['reason']} (monitoring run monitor-2)",
        ),
    ]
    with airflow_sandbox.running_airflow(home, env):
        serving = version_of(airflow_local.trigger(batches[0], {}, 1800))  # the first model, from a triggered run
        airflow, seen = airflow_local.api(), set()
        for batch, asset, extra, reason in cases:
            deliver(config.settings().incoming_dir, batch)  # labelled data newer than the serving model, no drift
            run_id = asset_triggered_run(airflow, asset, extra, seen)
            state = airflow.follow(airflow_local.DAG_ID, run_id, 1800)
            assert state == "success", airflow.failure_line(airflow_local.DAG_ID, run_id)
            outcome = recorded(run_id)
            assert (outcome["decision"]["action"], outcome["decision"]["reason"]) == ("retrain", reason)
            assert version_of(outcome["outcome"]) > serving
            serving = version_of(outcome["outcome"])
