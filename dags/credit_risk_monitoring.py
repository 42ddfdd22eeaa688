"""Watch what the served model sees: the predictions logged since the last run against its training data.

analyze (ML env: the window of the gateway's prediction log, TFDV distance and CSI per feature, the score's PSI,
thresholds calibrated to the window's size; the waiting outcome files taken in and joined, realized and estimated
performance per version and vintage, the joined outcomes as a training batch; HTML report) -> publish (StatsD
gauges) -> alert (email and Slack naming the drifted features, the decay, each quarantined outcome file) ->
retrain_on_drift (updates the live-drift Asset the retraining DAG is scheduled on, when
CREDIT_RISK_LIVE_DRIFT_RETRAIN is set and labelled data newer than the serving model exists; skipped otherwise) and
retrain_on_decay (updates the performance-decay Asset when the serving version's AUC is under its floor) -> finish
(the run's one-line outcome). Hourly (CREDIT_RISK_MONITOR_SCHEDULE) and on demand.
Parsing imports only Airflow's SDK and standard-library project modules. `analyze` hands its call to the warm ML
worker (`tfx_modules.ml_worker.client`) as the retraining DAG's ML tasks do: a light call, which runs in a fresh process
when no worker is ready (a scheduler's is kept warm) instead of starting one.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from airflow.sdk import Param, TriggerRule, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from common.config import settings
from common.records import batch_ledger
from dags.alerts import channels as alerts
from dags.alerts import monitoring_texts as live_alerts
from dags.decisions import triggers as trigger
from dags.metrics import monitoring as metrics
from tfx_modules.ml_worker import client as ml_client

# Through the task's logger, not print: stdout reaches the log asynchronously and, on a busy machine, after the
# task's collapsed "Post Execute" group has opened, where the UI hides it.
log = logging.getLogger("credit_risk.monitoring")

DAG_ID = "credit_risk_monitoring"
SCHEDULE = settings().monitor_schedule  # a cron expression or preset, or None (on demand only)
PARAMS = ("min_predictions", "window_hours", "false_alarm_rate", "psi_alert", "drift_thresholds")
NOTIFY_RETRIES = {"retries": 3, "retry_delay": timedelta(seconds=10), "retry_exponential_backoff": True}


@task
def analyze(params: dict | None = None, run_id: str | None = None) -> dict:
    """Claim the run's window of the prediction log (a rerun reads the same one) and judge it
    (`live_monitoring.monitor.run`, ML environment); returns the run's record."""
    options = {name: params[name] for name in PARAMS}
    return ml_client.call("live_monitoring.monitor:run", run_id, options, light=True)


@task
def publish(record: dict) -> dict:
    """The window's size, verdict, every measure and threshold, live against training: StatsD gauges."""
    return metrics.publish(record)


@task(**NOTIFY_RETRIES)
def alert(record: dict) -> None:
    """Live drift, performance decay, and each quarantined outcome file (why, where it is kept)."""
    if record["verdict"] == "drift":
        alerts.send(f"live drift: {', '.join(record['drifted'])}", live_alerts.drift_lines(record))
    for subject, lines in live_alerts.performance_alerts(record):
        alerts.send(subject, lines)


@task(outlets=[trigger.LIVE_DRIFT])
def retrain_on_drift(record: dict, outlet_events=None) -> list[str]:
    """Ask for retraining through the live-drift Asset; skipped unless that is on and there is newer data."""
    newer = trigger.newer_labelled_batches(batch_ledger.serving_model(), batch_ledger.accepted())
    reason = trigger.why_not_retrain(record, settings().live_drift_retrain, newer)
    if reason is not None:
        raise AirflowSkipException(reason)
    outlet_events[trigger.LIVE_DRIFT].extra = {"run_id": record["run_id"], "drifted": record["drifted"]}
    return newer


@task(outlets=[trigger.PERFORMANCE_DECAY])
def retrain_on_decay(record: dict, outlet_events=None) -> str:
    """Ask for retraining through the performance-decay Asset, the reason in the event; skipped without decay."""
    reason = record["performance"]["serving"]["decay"]
    if reason is None:
        raise AirflowSkipException("no performance decay")
    outlet_events[trigger.PERFORMANCE_DECAY].extra = {"run_id": record["run_id"], "reason": reason}
    return reason


@task(trigger_rule=TriggerRule.NONE_FAILED)
def finish(record: dict) -> str:
    """Log the run's outcome line (what `make run-monitor` prints)."""
    log.info("OUTCOME %s", record["outcome"])
    log.info("report: %s", record["report"])
    return record["outcome"]


@dag(
    dag_id=DAG_ID,
    # No start date and run_immediately=0, as the retraining DAG: the first scheduled run waits for the next tick.
    schedule=trigger.timetable(SCHEDULE) if SCHEDULE else None,
    catchup=False,
    max_active_runs=1,
    default_args={"on_failure_callback": alerts.task_failed, "retries": 0},
    doc_md=__doc__,
    tags=["credit-risk", "monitoring"],
    params={
        "min_predictions": Param(200, type="integer", minimum=50, description="Fewer predictions: no verdict."),
        "window_hours": Param(24, type="number", exclusiveMinimum=0, description="Ignore predictions older than this."),
        "false_alarm_rate": Param(
            0.01, type="number", exclusiveMinimum=0, maximum=0.5, description="Chance that a no-drift window alerts."
        ),
        "psi_alert": Param(0.25, type="number", exclusiveMinimum=0, description="PSI/CSI above this can be drift."),
        "drift_thresholds": Param(
            {}, type="object", description='Per-feature overrides of the TFDV thresholds, e.g. {"person_income": 0.2}.'
        ),
    },
)
def credit_risk_monitoring() -> None:
    record = analyze()
    done = [publish(record), alert(record), retrain_on_drift(record), retrain_on_decay(record)]
    done >> finish(record)


credit_risk_monitoring()
