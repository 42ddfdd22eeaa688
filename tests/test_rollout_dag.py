"""The retraining DAG deploys through the rollout: a real `airflow dags test` run over a live champion, behind the real
gateway, under steady traffic. A task per stage (begin, shadow, each canary step, deploy, end) runs in order, the
new version is promoted, the challenger is stopped, and no client request fails."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from common.config import settings
from data.generate import generate
from serving.rollout import read_state
from testing import airflow_sandbox
from testing.harness import airflow_settings, alert_sinks, dag_alert_connections, free_port, wait_for
from testing.rollout_stack import CHAMPION, TRAIN_ROWS, TRAIN_SEED, Traffic, rollout_stack
from tests.conftest import ml_env
from tfx_modules.data_gate import dataset

STAGE_TASKS = ("begin_rollout", "shadow", "canary_5", "canary_25", "canary_100", "deploy", "end_rollout")


def _task_states(home: Path) -> list[tuple[str, str]]:
    """(task, state) of the retraining group's tasks in the order they started, from the run's Airflow database."""
    with contextlib.closing(sqlite3.connect(home / "airflow" / "airflow.db")) as db:
        rows = db.execute("SELECT task_id, state FROM task_instance ORDER BY start_date").fetchall()
    return [(task.removeprefix("retrain."), state) for task, state in rows if task.startswith("retrain.")]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_retraining_run_rolls_the_new_model_out_a_task_per_stage(trained_model: Path, tmp_path: Path) -> None:
    """The champion's own rows arrive again and a forced retraining trains the same model anew (the null case): it
    passes shadow and the three canary steps and goes live, and the run's stage tasks show where it stood."""
    home = tmp_path / "home"
    with alert_sinks() as (slack, _mail, smtp_port), rollout_stack(home, trained_model, trained_model) as stack:
        env = {**ml_env(home), "CREDIT_RISK_SERVING_URL": stack.gateway}
        command = [sys.executable, "-m", "serving.deploy", "deploy", "--version", str(CHAMPION)]
        recorded = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert recorded.returncode == 0, recorded.stdout + recorded.stderr[-3000:]
        batch = dataset.write_canonical(generate(TRAIN_ROWS, seed=TRAIN_SEED), home / "again.csv")
        airflow_env = {
            **env,
            **airflow_settings(home),
            **dag_alert_connections(smtp_port, slack.url),
            "PATH": "/usr/bin:/bin",
            "CREDIT_RISK_ROLLOUT_SHADOW_REQUESTS": "200",
            "CREDIT_RISK_ROLLOUT_STEP_REQUESTS": "100",
            "CREDIT_RISK_ROLLOUT_STAGE_SECONDS": "240",
            "CREDIT_RISK_PROMETHEUS_PORT": str(free_port()),  # none answers: no live-drift alert holds a stage
        }
        with Traffic(stack.gateway, rate=30) as traffic:
            result = airflow_sandbox.run_dag_process(
                airflow_env, batch, {"force_retrain": True, "rollout": "shadow,canary"}, timeout=1500
            )
            output = result.stdout + result.stderr
            assert result.returncode == 0, output[-5000:]
            new = read_state(settings().rollout_state).get("version")
            wait_for(lambda: traffic.versions[str(new)] > 20, timeout=60, what="answers from the promoted version")

    assert result.stdout.strip().splitlines()[-1] == f"retrained version={new}", output[-3000:]
    states = _task_states(home)
    assert [s for s in states if s[0] in STAGE_TASKS] == [(task, "success") for task in STAGE_TASKS], states
    state = read_state(home / "rollout" / "rollout.json")
    assert state["stage"] == "promoted" and state["version"] == new > CHAMPION
    steps = [("shadow", 0, "pass"), *(("canary", w, "pass") for w in (5, 25, 100))]
    assert [(h["stage"], h["weight"], h["verdict"]) for h in state["history"]] == steps
    assert state["history"][0]["numbers"]["pairs"] >= 200
    assert json.loads((home / "state" / "serving.json").read_text())["live"]["version"] == new
    assert f"ROLLOUT promoted version {new} (" in output
    (announced,) = [b["text"] for b in slack.received if b["text"].startswith(f"new model version {new}")]
    assert f"deploy: deployed: promoted version {new} (" in announced  # the figures that decided, in the alert
    assert traffic.failures == [] and traffic.versions[str(CHAMPION)] > 0
    with pytest.raises(ProcessLookupError):  # the challenger was stopped
        os.kill(int(state["challenger_pid"]), 0)
