"""The retraining DAG parses fast in the Airflow environment, imports nothing heavy, and is wired as intended;
the gate's decision table."""

from __future__ import annotations

import itertools
import json
import subprocess

import pytest

from common import config
from dags.decisions import retraining as decisions
from testing.harness import AIRFLOW_PYTHON
from tfx_modules.component_ids import COMPONENT_IDS

LAUNCHER = config.PROJECT_ROOT / "scripts" / "airflow_local.py"
HEAVY = ("pandas", "numpy", "tensorflow", "tfx", "tensorflow_data_validation", "matplotlib", "apache_beam")

PROBE = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import airflow_local
import os
os.environ.update(airflow_local.environment())
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.decoders import decode_timetable
from airflow.serialization.encoders import encode_timetable
from airflow.timetables.base import TimeRestriction

def first_run_after(dag):  # when the scheduler starts the first scheduled run of a DAG unpaused now, Unix time
    timetable = decode_timetable(encode_timetable(dag.timetable))  # the scheduler's side of it
    restriction = TimeRestriction(earliest=dag.start_date, latest=None, catchup=dag.catchup)
    return timetable.next_dagrun_info(last_automated_data_interval=None, restriction=restriction).run_after.timestamp()

start = time.perf_counter()
bag = DagBag()
seconds = time.perf_counter() - start

def describe(dag):
    return {
        "tasks": [t.task_id for t in dag.topological_sort()] if dag else [],
        "downstream": {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks} if dag else {},
        "callbacks": sorted({t.task_id for t in dag.tasks if not t.on_failure_callback}) if dag else [],
        "catchup": dag.catchup if dag else None,
        "max_active_runs": dag.max_active_runs if dag else None,
        "schedule": getattr(getattr(dag.timetable, "timetable", dag.timetable), "expression", None) if dag else None,
        "assets": str(getattr(dag.timetable, "asset_condition", "")) if dag else "",
        "now": time.time(),  # just before the tick is computed: the test compares against this, not its own clock
        "first_run_after": first_run_after(dag) if dag else None,
        "teardowns": {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks if t.is_teardown} if dag else {},
        "outlets": sorted(a.name for t in dag.tasks for a in t.outlets) if dag else [],
        "params": sorted(dag.params) if dag else [],
    }

print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "seconds": seconds,
    "heavy": sorted(m for m in sys.argv[2].split(",") if m in sys.modules),
    **describe(bag.dags.get("credit_risk_retraining")),
    "monitoring": describe(bag.dags.get("credit_risk_monitoring")),
}))
"""


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("dag_integrity")
    env = {"CREDIT_RISK_HOME": str(home), "AIRFLOW_HOME": str(home / "airflow"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [str(AIRFLOW_PYTHON), "-c", PROBE, str(LAUNCHER.parent), ",".join(HEAVY)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_dag_imports_without_errors_fast_and_light(parsed: dict) -> None:
    assert parsed["errors"] == {}
    assert parsed["tasks"], "the DAG credit_risk_retraining was not found"
    # ~0.5 s on a quiet machine. The margin absorbs a loaded one; a module-level TensorFlow or TFX import (10 s and
    # more here) still fails it, beside the direct check of heavy modules below.
    assert parsed["seconds"] < 8.0
    assert parsed["heavy"] == []


def test_dag_settings(parsed: dict) -> None:
    assert parsed["catchup"] is False and parsed["max_active_runs"] == 1
    assert parsed["schedule"] == "0 0 * * *" and "credit_risk_live_drift" in parsed["assets"]  # daily or live drift
    assert "credit_risk_performance_decay" in parsed["assets"]  # or performance decay
    assert parsed["params"] == ["batch", "drift_thresholds", "force_retrain", "gate_only", "rollout"]
    assert parsed["callbacks"] == []  # every task alerts on failure


def test_monitoring_dag_settings_and_wiring(parsed: dict) -> None:
    monitoring = parsed["monitoring"]
    assert monitoring["tasks"][0] == "analyze" and monitoring["tasks"][-1] == "finish"
    assert monitoring["downstream"]["analyze"] == [
        "alert",
        "finish",
        "publish",
        "retrain_on_decay",
        "retrain_on_drift",
    ]
    assert monitoring["outlets"] == ["credit_risk_live_drift", "credit_risk_performance_decay"]
    assert monitoring["schedule"] == "0 * * * *" and monitoring["catchup"] is False
    assert monitoring["params"] == [
        "drift_thresholds",
        "false_alarm_rate",
        "min_predictions",
        "psi_alert",
        "window_hours",
    ]
    assert monitoring["callbacks"] == []


@pytest.mark.parametrize(("dag", "period"), [("retraining", 86400), ("monitoring", 3600)])
def test_a_new_dag_waits_for_its_next_tick_instead_of_running_at_once(parsed: dict, dag: str, period: int) -> None:
    """Unpaused the first time, a DAG would otherwise start a scheduled run for the last tick at once, beside the
    run `make run` triggers. Its first run is the next tick (daily and hourly, UTC) after the moment the probe
    asked, whenever the test itself runs."""
    described = parsed if dag == "retraining" else parsed["monitoring"]
    assert described["first_run_after"] == (described["now"] // period + 1) * period


def test_retention_runs_last_as_a_teardown(parsed: dict) -> None:
    """After the outcome is recorded, whatever it is, without deciding the run's state."""
    assert parsed["teardowns"] == {"retention": ["finish"]}
    assert parsed["tasks"][-1] == "retention"


def test_a_blessed_model_goes_live_through_a_task_per_rollout_stage(parsed: dict) -> None:
    """begin -> shadow -> a task per canary step -> deploy (the promotion) -> end, which stops the challenger."""
    down = parsed["downstream"]
    stages = ["begin_rollout", "shadow", "canary_5", "canary_25", "canary_100", "deploy", "end_rollout"]
    for before, after in itertools.pairwise(stages):
        assert f"retrain.{after}" in down[f"retrain.{before}"], (before, after)
    assert "retrain.begin_rollout" in down["retrain.record_lineage"]
    assert {"retrain.write_model_card", "retrain.announce_model"} <= set(down["retrain.deploy"])


def test_each_tfx_component_is_a_task_in_pipeline_order(parsed: dict) -> None:
    ids = COMPONENT_IDS
    tasks = [t.removeprefix("retrain.") for t in parsed["tasks"] if t.removeprefix("retrain.") in ids]
    assert tasks == list(ids)
    for before, after in itertools.pairwise(ids):
        assert f"retrain.{after}" in parsed["downstream"][f"retrain.{before}"]
    assert parsed["downstream"]["gate"] == ["no_training", "retrain.prepare"]


def _batch(name: str, status: str, drift: dict | None = None, reason: str = "") -> dict:
    return {"name": name, "status": status, "drift": drift or {}, "reason": reason}


DRIFT = {"person_income": {"measure": "jensen_shannon", "value": 0.3, "threshold": 0.1, "drifted": True}}
CALM = {"person_income": {"measure": "jensen_shannon", "value": 0.01, "threshold": 0.1, "drifted": False}}
MODEL = {"version": 3, "run_id": "r0", "fingerprint": "old"}


@pytest.mark.parametrize(
    ("batches", "force", "models", "fingerprint", "expected"),
    [
        ([_batch("a", "accepted")], False, [], "f", ("retrain", "no model yet")),
        ([_batch("a", "accepted", DRIFT)], False, [MODEL], "f", ("retrain", "drift in a (person_income)")),
        ([_batch("a", "accepted", CALM)], False, [MODEL], "f", ("skip", "no drift")),
        ([_batch("a", "accepted", CALM)], True, [MODEL], "f", ("retrain", "forced by the run's params")),
        ([_batch("a", "quarantined", reason="empty file")], False, [MODEL], "f", ("quarantine", "a: empty file")),
        ([_batch("a", "quarantined", reason="empty file")], False, [], None, ("quarantine", "a: empty file")),
        ([], False, [MODEL], "old", ("skip", "model version 3 is trained on exactly this data")),
        ([], False, [MODEL], "f", ("skip", "no new batch")),
        ([], True, [], None, ("skip", "no accepted data to train on")),
        ([_batch("a", "accepted", DRIFT)], True, [{**MODEL, "run_id": "now"}], "f", ("skip", "this run already")),
        ([], "live", [MODEL], "f", ("retrain", "live drift in loan_intent (monitoring run m1)")),
        ([], "live", [MODEL], "old", ("skip", "model version 3 is trained on exactly this data")),
        ([], "decay", [MODEL], "f", ("retrain", "performance decay: realized AUC 0.700 (monitoring run m2)")),
    ],
)
def test_gate_decision(batches, force, models, fingerprint, expected) -> None:
    live = "loan_intent (monitoring run m1)" if force == "live" else None
    decision = decisions.decide(
        {"batches": batches},
        run_id="now",
        force=force is True,
        models=models,
        accepted_fingerprint=fingerprint,
        live_drift=live,
        decay="realized AUC 0.700 (monitoring run m2)" if force == "decay" else None,
    )
    assert decision["action"] == expected[0]
    assert decision["reason"].startswith(expected[1])


def test_outcome_lines() -> None:
    retrain = {"action": "retrain", "reason": "no model yet"}
    assert decisions.outcome_line(retrain, False, {"blessed": True, "version": 4}) == "retrained version=4"
    assert decisions.outcome_line(retrain, False, {"blessed": False, "reason": "auc 0.7 < 0.85"}) == (
        "not blessed: auc 0.7 < 0.85"
    )
    assert decisions.outcome_line({"action": "skip", "reason": "no drift"}, False, None) == "skipped: no drift"
    assert decisions.outcome_line({"action": "quarantine", "reason": "x"}, False, None) == "quarantined: x"
    assert decisions.outcome_line(retrain, True, None) == "gate only: would retrain (no model yet)"
    with pytest.raises(ValueError):
        decisions.outcome_line(retrain, False, None)


def test_drift_lines_name_feature_value_and_threshold() -> None:
    assert decisions.drift_lines([_batch("a.csv", "accepted", {**DRIFT, **{"x": CALM["person_income"]}})]) == [
        "a.csv: person_income jensen_shannon 0.3000 > threshold 0.1000"
    ]
