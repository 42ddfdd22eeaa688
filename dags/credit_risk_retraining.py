"""Keep the credit-risk model fresh: validate new batches, gate on drift, retrain with TFX, hand over to serving.

intake (ML env: TFDV) files each incoming batch as accepted or quarantined and measures drift against the serving
model's training data -> decide (retrain | skip | quarantine, StatsD metrics) -> alerts -> gate -> retrain: one
task per TFX component (ML env) -> blessing -> lineage, rollout (begin, shadow, a task per canary step, deploy:
the promotion; the `rollout` param picks the stages) and announce -> finish (the run's one-line outcome)
-> retention (teardown: removes raw data past retention or needed by no model in use).
Parsing imports only Airflow's SDK and standard-library project modules. The ML-env steps are plain tasks that hand
their call to the warm ML worker (`tfx_modules.ml_worker.client`), which has TensorFlow and TFX imported already.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from airflow.exceptions import AirflowSkipException
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import Param, TriggerRule, chain, dag, task, task_group

from common.config import settings
from common.metric_format import figures
from common.records import batch_ledger
from dags.alerts import channels as alerts
from dags.decisions import retraining as decisions
from dags.decisions import triggers as trigger
from dags.metrics import retraining as metrics
from tfx_modules.component_ids import COMPONENT_IDS
from tfx_modules.ml_worker import client as ml_client

# Through the task's logger, not print: stdout reaches the log asynchronously and, on a busy machine, after the
# task's collapsed "Post Execute" group has opened, where the UI hides it.
log = logging.getLogger("credit_risk.retraining")

DAG_ID = "credit_risk_retraining"
SCHEDULE = settings().retrain_schedule  # a cron expression or preset (@hourly, @daily, ...), or None
STAGE_TIMEOUT = timedelta(seconds=settings().rollout_stage_seconds + 120)  # a stage ends itself at its time limit
NOTIFY_RETRIES = {"retries": 3, "retry_delay": timedelta(seconds=10), "retry_exponential_backoff": True}


@task
def intake(run: str, batch: str | None, thresholds: dict) -> dict:
    """Validate and file every pending batch (or only `batch`), measure drift, write the report. With no ML worker
    running, the intake runs in a fresh process while one starts beside it: a retraining run needs it, and its
    imports then overlap the intake's instead of delaying the first TFX task."""
    ml_client.start()
    return ml_client.call("tfx_modules.data_gate.intake:intake", run, batch, thresholds, light=True)


@task
def decide(record: dict, params: dict | None = None, run_id: str | None = None, triggering_asset_events=None) -> dict:
    """Retrain, skip or quarantine; the gate's decision and the drift values go to StatsD. A run started by the
    live monitor's drift or decay event retrains on the newer labelled data."""
    accepted = batch_ledger.accepted()
    decision = decisions.decide(
        record,
        run_id=run_id,
        force=params["force_retrain"],
        models=batch_ledger.lineage()["models"],
        accepted_fingerprint=batch_ledger.fingerprint([b["sha256"] for b in accepted]) if accepted else None,
        live_drift=trigger.live_drift_reason(triggering_asset_events),
        decay=trigger.decay_reason(triggering_asset_events),
    )
    metrics.gate(record["batches"], decision["action"])
    return {**decision, "report": record["report"]}


@task(**NOTIFY_RETRIES)
def notify_intake(record: dict, decision: dict) -> None:
    """One alert per quarantined batch (why) and one for drift (features, values, thresholds, decision)."""
    report = f"report: {record['report']}"
    for batch in record["batches"]:
        if batch["status"] == "quarantined":
            lines = [f"reason: {batch['reason']}", f"kept at: {batch['path']}", report]
            alerts.send(f"batch {batch['name']} quarantined", lines)
    drift = decisions.drift_lines(record["batches"])
    if drift:
        alerts.send("drift detected", [*drift, f"decision: {decision['action']} ({decision['reason']})", report])


@task.branch
def gate(decision: dict, params: dict | None = None) -> str:
    return "retrain.prepare" if decision["action"] == "retrain" and not params["gate_only"] else "no_training"


@task
def prepare(run_id: str | None = None) -> dict:
    """The run's training data: a folder of links to every accepted batch."""
    return batch_ledger.training_folder(run_id)


@task(retries=1, retry_delay=timedelta(seconds=30))
def run_component(node_id: str, run: str, data_root: str) -> None:
    ml_client.call("tfx_modules.node_runner:run_node", node_id, run, data_root)


@task
def read_blessing(run: str) -> dict:
    """Blessed or not, pushed version and metrics, from ML Metadata; writes the model's evaluation report."""
    return ml_client.call("tfx_modules.reporting.model_report:blessing", run)


@task.branch
def blessed(blessing: dict) -> str:
    return "retrain.record_lineage" if blessing["blessed"] else "retrain.announce_not_blessed"


@task
def record_lineage(run: str, blessing: dict, training: dict) -> dict:
    """Model version -> batches, and the schema and baseline statistics of its data for the next drift gate."""
    return ml_client.call("tfx_modules.data_gate.intake:record_model", run, blessing, training["batches"])


@task
def begin_rollout(model: dict, params: dict | None = None) -> dict:
    """Start the challenger beside the live model and record the rollout's first stage (serving/rollout.py: the
    gateway follows it). With `rollout=direct`, or no model live yet (no champion to judge against), `deploy` swaps."""
    from serving import rollout_controller

    return rollout_controller.begin_version(model["version"], params["rollout"])


# A stage runs after `begin_rollout` and the stage before it, which may be skipped (no shadow in canary-only).
@task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS, execution_timeout=STAGE_TIMEOUT)
def rollout_stage(rollout: dict, name: str, weight: int) -> dict:
    """One stage (shadow, or a canary step at `weight` %): wait for its requests while the gateway judges them. A
    breach rolls the rollout back and fails the task, whose alert carries the numbers; not one of the rollout's
    stages: skipped."""
    from serving import rollout_controller

    if name not in rollout["stages"]:  # a direct rollout has none
        raise AirflowSkipException(f"{name}: not a stage of this rollout ({rollout.get('why') or rollout['stages']})")
    outcome = rollout_controller.settings_stage(rollout, name, weight)
    if not outcome["passed"]:
        raise RuntimeError(outcome["line"])
    return outcome["numbers"]


@task(retries=1, retry_delay=timedelta(seconds=30), trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
def deploy(model: dict, rollout: dict) -> dict:
    """Promote the rollout's challenger, or swap the blessed version in directly; a failed switch (serving kept or
    rolled back) fails the task."""
    from serving import rollout_controller
    from serving.deploy import redeploy

    if rollout["direct"]:
        result = redeploy(model["version"])
        if result["status"] in ("failed", "rolled_back"):
            raise RuntimeError(f"deploy of version {model['version']}: {result['status']}: {result['message']}")
        return result
    promoted = rollout_controller.promote(rollout)
    if promoted["status"] != "promoted":
        raise RuntimeError(promoted["line"])
    log.info("ROLLOUT %s", promoted["line"])
    return {"status": "deployed", "version": model["version"], "message": promoted["line"]}


@task(trigger_rule=TriggerRule.ALL_DONE_MIN_ONE_SUCCESS)
def end_rollout(rollout: dict) -> None:
    """Once the stages and deploy are done, whatever their outcome: a rollout still under way (a failed or killed
    task) is rolled back, and its challenger stopped once the gateway has left it."""
    from serving import rollout_controller

    if not rollout["direct"]:
        rollout_controller.close(rollout, "the retraining run ended before the rollout did")


@task
def write_model_card(model: dict, deployed: dict) -> str:
    """The version's model card, with the deploy that just happened in its deployment record."""
    return ml_client.call("tfx_modules.reporting.model_card:write", model["version"])


@task(**NOTIFY_RETRIES)
def announce_model(model: dict, deployed: dict, card: str) -> None:
    sent = metrics.model(model["version"], model["metrics"], model["time"])
    quality = {k: v for k, v in sent.items() if k not in ("version", "pushed_timestamp")}
    alerts.send(
        f"new model version {model['version']}",
        [
            f"metrics: {figures(quality)}",
            f"trained on {len(model['batches'])} batches, {model['rows']} rows",
            f"deploy: {deployed['status']}: {deployed['message']}",
            f"report: {model['report']}",
            f"model card: {card}",
        ],
    )


@task(**NOTIFY_RETRIES)
def announce_not_blessed(blessing: dict) -> None:
    lines = [
        f"reason: {blessing['reason']}",
        *(f"fairness: {v['detail']}" for v in blessing.get("fairness", {}).get("violations", [])),
        f"metrics: {figures(blessing['metrics'])}",
        "serving unchanged",
        f"report: {blessing['report']}",
    ]
    alerts.send("new model not blessed", lines)


@task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
def finish(decision: dict, params: dict | None = None, run_id: str | None = None, ti=None) -> str:
    """Record and log the run's outcome line (what `make run-dag` prints)."""
    blessing = ti.xcom_pull(task_ids="retrain.read_blessing")
    line = decisions.outcome_line(decision, params["gate_only"], blessing)
    batch_ledger.record_run(run_id, {"outcome": line, "decision": decision, "blessing": blessing})
    log.info("OUTCOME %s", line)
    return line


@task
def retention() -> dict:
    """Remove raw applicant data past CREDIT_RISK_RETENTION_DAYS or needed by no model in use, never what the serving
    model or its rollback target was trained on (tfx_modules/data_gate/retention.py); the log lists what went."""
    return ml_client.call("tfx_modules.data_gate.retention:apply", light=True)


@task_group
def retrain() -> None:
    """The TFX pipeline, one task per component, then the blessing and what follows from it."""
    run = "{{ run_id }}"
    training = prepare()
    steps = [run_component.override(task_id=node_id)(node_id, run, training["data_root"]) for node_id in COMPONENT_IDS]
    blessing = read_blessing(run)
    chain(training, *steps, blessing)
    model = record_lineage(run, blessing, training)
    chain(blessed(blessing), [model, announce_not_blessed(blessing)])
    rollout = begin_rollout(model)
    previous = rollout
    for name, weight in [("shadow", 0), *(("canary", w) for w in settings().rollout_canary_steps)]:
        task_id = name if name == "shadow" else f"canary_{weight}"
        previous = previous >> rollout_stage.override(task_id=task_id)(rollout, name, weight)
    deployed = deploy(model, rollout)
    previous >> deployed >> end_rollout(rollout)
    announce_model(model, deployed, write_model_card(model, deployed))


@dag(
    dag_id=DAG_ID,
    # No start date and run_immediately=0: the DAG's first scheduled run waits for the schedule's next tick instead of
    # starting at once for the last one (beside the run `make run` triggers, whose batch it would take).
    schedule=trigger.retraining_schedule(SCHEDULE),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    default_args={"on_failure_callback": alerts.task_failed, "retries": 0},
    doc_md=__doc__,
    tags=["credit-risk", "tfx"],
    params={
        "force_retrain": Param(False, type="boolean", description="Retrain even without drift."),
        "gate_only": Param(False, type="boolean", description="Validate, decide and alert; no training."),
        "batch": Param(None, type=["null", "string"], description="Only this incoming file (default: all)."),
        "rollout": Param(
            ",".join(settings().rollout_stages),
            type="string",
            enum=["shadow,canary", "shadow", "canary", "direct"],
            description="How a blessed model goes live: through shadow and/or canary stages, or swapped in directly.",
        ),
        "drift_thresholds": Param(
            {}, type="object", description='Per-feature overrides of the drift thresholds, e.g. {"person_income": 0.2}.'
        ),
    },
)
def credit_risk_retraining() -> None:
    record = intake("{{ run_id }}", "{{ params.batch }}", "{{ params.drift_thresholds }}")
    decision = decide(record)
    notify_intake(record, decision)
    trained = retrain()
    outcome = finish(decision)
    chain(gate(decision), [trained, EmptyOperator(task_id="no_training")], outcome)
    # A teardown: it runs when the run is over, whatever its outcome, and does not decide it.
    outcome >> retention().as_teardown()


credit_risk_retraining()
