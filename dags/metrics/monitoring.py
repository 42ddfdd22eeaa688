"""StatsD gauges of a live-monitoring run, for Prometheus (monitoring/statsd_mapping.yml names them).

`credit_risk.live.predictions` and `.version` (the window), `.verdict` (1 drift, 0 none, -1 too few predictions);
per feature `credit_risk.live.distance.<measure>.<feature>` and `.threshold.<measure>.<feature>` (measure:
jensen_shannon, l_infinity, csi), `.mean.<feature>` / `.training_mean.<feature>` (numeric) and
`.share.<feature>.<category>` / `.training_share.<feature>.<category>`; `credit_risk.live.score_psi` and
`.score_psi_threshold`. Performance, per model version with predictions in the log:
`credit_risk.performance.realized.<metric>.<version>` (auc, pr_auc, accuracy, ks, gini, ece),
`.estimated.<metric>.<version>` (auc, accuracy: CBPE), `.evaluation_auc.<version>`, `.labelled.<version>` and
`.unlabelled.<version>`; the floors `.auc_floor`, `.auc_margin`, `.min_labelled`; `.decay` (1 or 0) and
`credit_risk.outcomes.quarantined` / `.waiting` (files quarantined by the run, outcomes waiting for a prediction).
"""

from __future__ import annotations

from dags.metrics.retraining import statsd_client

VERDICTS = {"drift": 1, "no_drift": 0, "too_few": -1}


def gauges(record: dict) -> dict[str, float]:
    """The gauges of a run's record, by StatsD name (without the client's `credit_risk.` prefix)."""
    sent = {"live.predictions": float(record["predictions"]), "live.verdict": float(VERDICTS[record["verdict"]])}
    if record.get("performance"):
        sent.update(performance_gauges(record["performance"]))
    if record["version"] is not None:
        sent["live.version"] = float(record["version"])
    result = record.get("result")
    if not result:
        return sent
    for name, found in result["features"].items():
        for measure, value, limit in (
            (found["measure"], found["value"], found["threshold"]),
            ("csi", found["csi"], found["csi_threshold"]),
        ):
            sent[f"live.distance.{measure}.{name}"] = value
            sent[f"live.threshold.{measure}.{name}"] = limit
        if "live_mean" in found:
            sent[f"live.mean.{name}"], sent[f"live.training_mean.{name}"] = found["live_mean"], found["training_mean"]
        for category, share in found.get("live_shares", {}).items():
            sent[f"live.share.{name}.{category}"] = share
            sent[f"live.training_share.{name}.{category}"] = found["training_shares"][category]
    sent["live.score_psi"], sent["live.score_psi_threshold"] = result["score"]["psi"], result["score"]["threshold"]
    return sent


REALIZED = ("auc", "pr_auc", "accuracy", "ks", "gini", "ece")
ESTIMATED = ("auc", "accuracy")


def performance_gauges(performance: dict) -> dict[str, float]:
    """The gauges of a run's `performance` section (outcomes/join.py)."""
    serving = performance["serving"]
    sent = {
        "performance.auc_floor": serving["floor"],
        "performance.auc_margin": serving["margin"],
        "performance.min_labelled": float(serving["min_labelled"]),
        "performance.decay": float(serving["decay"] is not None),
        "outcomes.quarantined": float(len(performance["quarantined"])),
        "outcomes.waiting": float(performance["waiting"]),
    }
    for version, found in performance["versions"].items():
        sent[f"performance.labelled.{version}"] = float(found["labelled"])
        sent[f"performance.unlabelled.{version}"] = float(found["unlabelled"])
        if found.get("evaluation_auc") is not None:
            sent[f"performance.evaluation_auc.{version}"] = found["evaluation_auc"]
        for kind, names in (("realized", REALIZED), ("estimated", ESTIMATED)):
            for name in names if found[kind] else ():
                sent[f"performance.{kind}.{name}.{version}"] = found[kind][name]
    return sent


def publish(record: dict) -> dict[str, float]:
    sent = gauges(record)
    client = statsd_client()
    for name, value in sent.items():
        client.gauge(name, value)
    return sent
