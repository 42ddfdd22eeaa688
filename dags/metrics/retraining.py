"""StatsD metrics of the gate and of new models, for Prometheus (through the statsd exporter).

Names: `credit_risk.drift.<feature>` and `credit_risk.drift_threshold.<feature>` gauges,
`credit_risk.drift_gate.<retrain|skip|quarantine>` counters, `credit_risk.model.<auc|accuracy|version|pushed_timestamp>`
gauges (monitoring/statsd_mapping.yml names them in Prometheus). Host and port from settings().
"""

from __future__ import annotations

from common.config import MODEL_NAME, settings

# Names a metric may have in the Evaluator's output, by the name the gauge gets.
MODEL_METRICS = {"auc": ("auc",), "accuracy": ("accuracy", "binary_accuracy")}


def statsd_client():
    import statsd

    config = settings()
    return statsd.StatsClient(config.statsd_host, config.statsd_port, prefix=MODEL_NAME)


def gate(batches: list[dict], action: str) -> None:
    """Per feature the largest drift among the run's accepted batches with its threshold (the DriftDetected alert
    compares the two), the number of quarantined batches (0 too: a counter series born at its first event hides that
    event from PromQL's increase()), and the decision."""
    client = statsd_client()
    largest: dict[str, dict] = {}
    for batch in batches:
        for feature, drift in batch.get("drift", {}).items():
            if feature not in largest or drift["value"] > largest[feature]["value"]:
                largest[feature] = drift
    for feature, drift in largest.items():
        client.gauge(f"drift.{feature}", drift["value"])
        client.gauge(f"drift_threshold.{feature}", drift["threshold"])
    client.incr("drift_gate.quarantine", sum(b["status"] == "quarantined" for b in batches))
    if action in ("retrain", "skip"):
        client.incr(f"drift_gate.{action}")


def model(version: int, evaluation: dict[str, float], pushed_at: float) -> dict[str, float]:
    """Gauges of a new model (`pushed_at`: Unix time of its push, for the model-age panel and alert); returns what
    was sent."""
    sent = {"version": float(version), "pushed_timestamp": pushed_at}
    for name, aliases in MODEL_METRICS.items():
        value = next((evaluation[a] for a in aliases if a in evaluation), None)
        if value is not None:
            sent[name] = float(value)
    client = statsd_client()
    for name, value in sent.items():
        client.gauge(f"model.{name}", value)
    return sent
