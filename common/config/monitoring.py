"""Metrics and the live monitor: StatsD, Prometheus, Alertmanager, drift and decay rules."""

from __future__ import annotations

from dataclasses import dataclass

from common.config import environment


@dataclass(frozen=True, kw_only=True)
class Monitoring:
    statsd_host: str
    statsd_port: int
    statsd_metrics_port: int = 9102  # the StatsD bridge's /metrics (statsd-exporter's port)
    prometheus_port: int = 9090
    alertmanager_port: int = 9093
    live_drift_retrain: bool = False  # live drift also triggers retraining when newer labelled data exists
    min_labelled: int = 200  # predictions with outcomes a version needs before its realized performance is judged
    decay_margin: float = 0.05  # realized AUC this far below the version's evaluation AUC is decay (as below min_auc)
    decay_on_estimate: bool = False  # without enough outcomes, the estimated (CBPE) AUC below its floor is decay too


def from_environment() -> dict:
    """This area's settings from the environment, each with its default."""
    return dict(
        statsd_host=environment.text("CREDIT_RISK_STATSD_HOST", "127.0.0.1"),
        statsd_port=int(environment.text("CREDIT_RISK_STATSD_PORT", "8125")),
        statsd_metrics_port=int(environment.text("CREDIT_RISK_STATSD_METRICS_PORT", "9102")),
        prometheus_port=int(environment.text("CREDIT_RISK_PROMETHEUS_PORT", "9090")),
        alertmanager_port=int(environment.text("CREDIT_RISK_ALERTMANAGER_PORT", "9093")),
        live_drift_retrain=environment.text("CREDIT_RISK_LIVE_DRIFT_RETRAIN", "false").strip().lower()
        in ("1", "true", "yes"),
        min_labelled=int(environment.text("CREDIT_RISK_MIN_LABELLED", "200")),
        decay_margin=float(environment.text("CREDIT_RISK_DECAY_MARGIN", "0.05")),
        decay_on_estimate=environment.text("CREDIT_RISK_DECAY_ON_ESTIMATE", "false").strip().lower()
        in ("1", "true", "yes"),
    )
