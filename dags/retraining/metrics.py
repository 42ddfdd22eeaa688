"""StatsD metrics of the gate and of new models, for Prometheus (through the statsd exporter).

Names: `credit_risk.drift.<feature>` gauges, `credit_risk.drift_gate.<retrain|skip|quarantine>` counters,
`credit_risk.model.<auc|accuracy|version>` gauges. Host and port from settings().
"""

from __future__ import annotations

from tfx_modules.config import MODEL_NAME, settings

# Names a metric may have in the Evaluator's output, by the name the gauge gets.
MODEL_METRICS = {"auc": ("auc",), "accuracy": ("accuracy", "binary_accuracy")}


def _client():
    import statsd

    config = settings()
    return statsd.StatsClient(config.statsd_host, config.statsd_port, prefix=MODEL_NAME)


def gate(batches: list[dict], action: str) -> None:
    """Drift of each accepted batch per feature, one count per quarantined batch, and the run's decision."""
    client = _client()
    for batch in batches:
        for feature, drift in batch.get("drift", {}).items():
            client.gauge(f"drift.{feature}", drift["value"])
        if batch["status"] == "quarantined":
            client.incr("drift_gate.quarantine")
    if action in ("retrain", "skip"):
        client.incr(f"drift_gate.{action}")


def model(version: int, evaluation: dict[str, float]) -> dict[str, float]:
    """Gauges of a new model; returns what was sent."""
    sent = {"version": float(version)}
    for name, aliases in MODEL_METRICS.items():
        value = next((evaluation[a] for a in aliases if a in evaluation), None)
        if value is not None:
            sent[name] = float(value)
    client = _client()
    for name, value in sent.items():
        client.gauge(f"model.{name}", value)
    return sent
