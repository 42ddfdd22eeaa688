"""The Grafana dashboards, declared once as panel specs and written as provisioned JSON.

Grafana loads monitoring/grafana/dashboards/*.json; this module is their source (`python -m
monitoring.grafana_dashboards` rewrites them, and a test fails when they drift apart). Every query goes through
the datasource with the fixed uid provisioned in monitoring/grafana/provisioning/datasources/.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from common.config import MODEL_NAME

DASHBOARD_DIR = Path(__file__).resolve().parent / "grafana" / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "credit-risk-prometheus"}
DAG_ID = "credit_risk_retraining"
_MODEL = f'model_name="{MODEL_NAME}"'
_REQUESTS = f":tensorflow:serving:request_count{{{_MODEL}}}"
_LATENCY = f"sum by (le) (rate(:tensorflow:serving:request_latency_bucket{{{_MODEL}}}[$__rate_interval]))"
_DAG = f'dag_id="{DAG_ID}"'


def _dag_mean(summary: str, by: str) -> str:
    """The retraining DAG's mean of a StatsD timer summary, per `by`: its sum over its count."""
    return f"sum by ({by}) ({summary}_sum{{{_DAG}}}) / sum by ({by}) ({summary}_count{{{_DAG}}})"


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"  # or stat, bargauge
    description: str = ""


SERVING = (
    Panel(
        "Requests per second by status",
        ((f"sum by (status) (rate({_REQUESTS}[$__rate_interval]))", "{{status}}"),),
        "reqps",
        description="Prediction requests answered per second, by TF status (OK, INVALID_ARGUMENT, ...).",
    ),
    Panel(
        "Error ratio",
        (
            (
                f'(sum(rate(:tensorflow:serving:request_count{{{_MODEL},status!="OK"}}[$__rate_interval]))'
                " or vector(0))"
                f" / sum(rate({_REQUESTS}[$__rate_interval]))",
                "errors / requests",
            ),
        ),
        "percentunit",
        description="Share of requests with a non-OK status; the ServingErrorRatioHigh alert fires above 5%.",
    ),
    Panel(
        "Request latency",
        (
            (f"histogram_quantile(0.5, {_LATENCY}) / 1000", "p50"),
            (f"histogram_quantile(0.99, {_LATENCY}) / 1000", "p99"),
        ),
        "ms",
        description="Server-side latency from TF Serving's histogram (microseconds, shown in ms).",
    ),
    Panel(
        "Live model version",
        ((f"max(:tensorflow:serving:model_version{{{_MODEL}}}) or max(credit_risk_model_version)", "version"),),
        kind="stat",
        description="The version answering requests (the local server's gauge; TF Serving: the newest pushed).",
    ),
    Panel(
        "Model server up",
        (('up{job="serving"}', "{{instance}}"),),
        kind="stat",
        description="1 when Prometheus can scrape the model server; ServingDown fires after a minute of 0.",
    ),
    Panel(
        "Rollout stage",
        (
            ("max(credit_risk_rollout_stage) or vector(0)", "stage"),
            ("max(credit_risk_rollout_canary_weight) or vector(0)", "canary %"),
        ),
        kind="stat",
        description="The gateway's rollout (serving/rollout.py): 0 none, 1 shadow, 2 canary (at the weight shown), "
        "3 promoted, -1 rolled back (RolloutRolledBack fires with the reason); RolloutStalled after 30 min in one.",
    ),
    Panel(
        "Rollout requests by role",
        (
            (
                "sum by (role, outcome) (rate(credit_risk_rollout_requests[$__rate_interval])) or vector(0)",
                "{{role}} {{outcome}}",
            ),
        ),
        "reqps",
        description="During a rollout: calls answered by the champion and the challenger (mirrored ones in shadow), "
        "and the challenger's errors, which the client never sees (the champion answers instead).",
    ),
    Panel(
        "Rollout p99 latency by role",
        (
            (
                "histogram_quantile(0.99, sum by (role, le) "
                "(rate(credit_risk_rollout_request_latency_bucket[$__rate_interval]))) / 1000 or vector(0)",
                "{{role}}",
            ),
        ),
        "ms",
        description="Each model's p99 as the gateway measures it; the rollout breaches at 3x the champion's.",
    ),
)

RETRAINING = (
    Panel(
        "DAG runs by state",
        ((f"sum by (state) (airflow_dagrun_duration_seconds_count{{{_DAG}}})", "{{state}}"),),
        kind="stat",
        description="Finished runs of the retraining DAG, counted by the scheduler since the exporter started.",
    ),
    Panel(
        "Failed DAG runs",
        ((f'sum(airflow_dagrun_duration_seconds_count{{{_DAG},state="failed"}}) or vector(0)', "failed"),),
        kind="stat",
        description="Runs that ended failed; the DagRunFailed alert fires on each new one.",
    ),
    Panel("DAG run duration (mean)", ((_dag_mean("airflow_dagrun_duration_seconds", "state"), "{{state}}"),), "s"),
    Panel(
        "Task duration (mean)",
        ((_dag_mean("airflow_task_duration_seconds", "task_id"), "{{task_id}}"),),
        "s",
        kind="bargauge",
    ),
    Panel(
        "Task outcomes",
        ((f"sum by (task_id, state) (airflow_task_instance_finished{{{_DAG}}})", "{{task_id}} {{state}}"),),
        kind="bargauge",
        description="Finished task instances by state: failures show here first.",
    ),
    Panel(
        "Drift per feature",
        (("credit_risk_drift", "{{feature}}"), ("credit_risk_drift_threshold", "{{feature}} threshold")),
        description="Jensen-Shannon divergence (numeric) or L-infinity distance (categorical) of the newest batch "
        "against the serving model's training data, with each feature's threshold.",
    ),
    Panel(
        "Drift gate decisions",
        (("sum by (decision) (credit_risk_drift_gate_decisions)", "{{decision}}"),),
        kind="bargauge",
        description="How often the gate chose retrain, skip or quarantine.",
    ),
    Panel(
        "Newest blessed model: evaluation metrics",
        (("credit_risk_model_metric", "{{metric}}"),),
        "percentunit",
        description="AUC and accuracy of the newest blessed model on its eval split, over time.",
    ),
    Panel(
        "Newest blessed model: version and age",
        (
            ("max(credit_risk_model_version)", "version"),
            ("time() - max(credit_risk_model_pushed_timestamp_seconds)", "age (s)"),
        ),
        kind="stat",
        description="ModelTooOld fires when the newest push is more than 7 days old.",
    ),
    Panel(
        "Airflow heartbeats",
        (("sum by (component) (rate(airflow_component_heartbeat[$__rate_interval]))", "{{component}}"),),
        "hertz",
        description="Scheduler, dag-processor and triggerer heartbeats; SchedulerHeartbeatMissing fires at 0.",
    ),
)

LIVE = (
    Panel(
        "Live vs training: numeric features",
        (("credit_risk_live_feature_mean / on (feature) credit_risk_training_feature_mean", "{{feature}}"),),
        "percentunit",
        description="Each numeric feature's mean in the monitoring window over its mean in the serving model's "
        "training data (100 % = unchanged), per monitoring run.",
    ),
    Panel(
        "Live vs training: category shares",
        (
            (
                "credit_risk_live_category_share - on (feature, category) credit_risk_training_category_share",
                "{{feature}}={{category}}",
            ),
        ),
        "percentunit",
        description="Each category's share in the monitoring window minus its share in the training data.",
    ),
    Panel(
        "Live drift per feature (measure / threshold)",
        (
            (
                "credit_risk_live_drift / on (measure, feature) credit_risk_live_drift_threshold",
                "{{feature}} {{measure}}",
            ),
        ),
        description="TFDV distance (Jensen-Shannon, L-infinity) and CSI of the window over the threshold it was "
        "judged against (the base threshold or the window's noise level, whichever is higher); above 1 is drift.",
    ),
    Panel(
        "Score PSI",
        (
            ("credit_risk_live_score_psi", "PSI"),
            ("credit_risk_live_score_psi_threshold", "threshold"),
        ),
        description="PSI of the window's predicted probabilities against the serving model's eval split "
        "(0.10 moderate, 0.25 significant).",
    ),
    Panel(
        "Prediction volume by version",
        (("sum by (version) (rate(credit_risk_gateway_predictions[$__rate_interval]))", "version {{version}}"),),
        "reqps",
        description="Predictions answered per second through the gateway, by the model version that answered.",
    ),
    Panel(
        "Dropped prediction log records",
        (
            ("sum by (reason) (increase(credit_risk_prediction_log_dropped[$__rate_interval]))", "{{reason}}"),
            ("sum(credit_risk_prediction_log_queued)", "queued"),
        ),
        description="Log records the gateway dropped (full queue, write error) rather than slow requests down; "
        "PredictionLogDropping fires on any.",
    ),
    Panel(
        "Realized vs evaluation AUC by version",
        (
            ('credit_risk_realized_performance{metric="auc"}', "realized, version {{version}}"),
            ('credit_risk_estimated_performance{metric="auc"}', "estimated (CBPE), version {{version}}"),
            ("credit_risk_evaluation_auc", "evaluation, version {{version}}"),
            ("credit_risk_performance_auc_floor", "floor"),
        ),
        description="ROC-AUC of each served version on the predictions whose outcomes have arrived, CBPE's "
        "estimate on those still without, and the version's AUC on its eval split; RealizedAucDecay fires below the "
        "floor or the margin under the evaluation AUC.",
    ),
    Panel(
        "Realized KS, Gini and calibration error",
        (('credit_risk_realized_performance{metric=~"ks|gini|ece|pr_auc"}', "{{metric}}, version {{version}}"),),
        description="The credit conventions (KS, Gini = 2 AUC - 1), PR-AUC and the expected calibration error "
        "by score decile, on the labelled predictions.",
    ),
    Panel(
        "Labelled and unlabelled predictions",
        (
            ("credit_risk_outcome_predictions", "{{state}}, version {{version}}"),
            ("credit_risk_outcomes_waiting", "outcomes waiting for a prediction"),
            ("credit_risk_outcome_files_quarantined", "outcome files quarantined (last run)"),
        ),
        description="Logged predictions with and without an outcome per version; outcomes whose prediction is "
        "not logged yet; outcome files the last run quarantined.",
    ),
    Panel(
        "Monitoring window",
        (
            ("credit_risk_live_window_predictions", "predictions"),
            ("credit_risk_live_verdict", "verdict (1 drift, 0 none, -1 too few)"),
            ("credit_risk_live_model_version", "version"),
        ),
        kind="stat",
        description="The newest monitoring run: predictions judged, its verdict and the model version.",
    ),
)

DASHBOARDS = {
    "serving": ("credit-risk-serving", "Credit risk: serving", SERVING),
    "retraining": ("credit-risk-retraining", "Credit risk: retraining", RETRAINING),
    "live": ("credit-risk-live", "Credit risk: live traffic", LIVE),
}


def _panel(panel_id: int, panel: Panel) -> dict:
    width = 8 if panel.kind == "stat" else 12
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": width, "x": 0, "y": 0},  # x, y filled in by the layout
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(panel.queries)
        ],
    }


def _layout(panels: list[dict]) -> list[dict]:
    """Left to right, 24 columns a row."""
    x = y = row_height = 0
    for panel in panels:
        grid = panel["gridPos"]
        if x + grid["w"] > 24:
            x, y, row_height = 0, y + row_height, 0
        grid.update(x=x, y=y)
        x, row_height = x + grid["w"], max(row_height, grid["h"])
    return panels


def build(name: str) -> dict:
    uid, title, panels = DASHBOARDS[name]
    return {
        "uid": uid,
        "title": title,
        "tags": ["credit-risk"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": _layout([_panel(i, p) for i, p in enumerate(panels, start=1)]),
    }


def render(name: str) -> str:
    return json.dumps(build(name), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    DASHBOARD_DIR.mkdir(parents=True, exist_ok=True)
    for name in DASHBOARDS:
        path = DASHBOARD_DIR / f"{name}.json"
        path.write_text(render(name))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
