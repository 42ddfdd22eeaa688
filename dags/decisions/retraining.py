"""The gate's decision and the run's one-line outcome: pure functions of the intake record and the lineage."""

from __future__ import annotations


def drifted(batches: list[dict]) -> dict[str, dict[str, dict]]:
    """Per accepted batch, the features whose drift exceeds their threshold."""
    found = {b["name"]: {f: d for f, d in b.get("drift", {}).items() if d["drifted"]} for b in batches}
    return {name: features for name, features in found.items() if features}


def decide(
    record: dict,
    *,
    run_id: str,
    force: bool,
    models: list[dict],
    accepted_fingerprint: str | None,
    live_drift: str | None = None,
    decay: str | None = None,
) -> dict[str, str]:
    """`{"action": retrain|skip|quarantine, "reason": ...}` for a run whose intake filed `record["batches"]`.

    `models` is the lineage (oldest first), `accepted_fingerprint` identifies all accepted data (None: none yet),
    `live_drift` what the live monitor found drifted when it triggered this run, `decay` why it found the serving
    version's performance decayed.
    """
    batches = record["batches"]
    statuses = {b["status"] for b in batches}
    trained_here = next((m for m in models if m["run_id"] == run_id), None)
    serving = models[-1] if models else None
    drift = drifted(batches)
    if trained_here:
        return {"action": "skip", "reason": f"this run already trained version {trained_here['version']}"}
    if "quarantined" in statuses and "accepted" not in statuses and not force:
        reasons = [f"{b['name']}: {b['reason']}" for b in batches if b["status"] == "quarantined"]
        return {"action": "quarantine", "reason": reasons[0] if len(reasons) == 1 else "; ".join(reasons)}
    if accepted_fingerprint is None:
        return {"action": "skip", "reason": "no accepted data to train on"}
    if force:
        return {"action": "retrain", "reason": "forced by the run's params"}
    if serving is None:
        return {"action": "retrain", "reason": "no model yet"}
    if serving["fingerprint"] == accepted_fingerprint:
        return {"action": "skip", "reason": f"model version {serving['version']} is trained on exactly this data"}
    if decay:
        return {"action": "retrain", "reason": f"performance decay: {decay}"}
    if live_drift:
        return {"action": "retrain", "reason": f"live drift in {live_drift}"}
    if drift:
        listed = ", ".join(f"{name} ({', '.join(features)})" for name, features in drift.items())
        return {"action": "retrain", "reason": f"drift in {listed}"}
    if "accepted" in statuses:
        return {"action": "skip", "reason": "no drift"}
    return {"action": "skip", "reason": "no new batch"}


def drift_lines(batches: list[dict]) -> list[str]:
    """'batch.csv: person_income jensen_shannon 0.2101 > threshold 0.1000' for every drifted feature."""
    return [
        f"{name}: {feature} {d['measure']} {d['value']:.4f} > threshold {d['threshold']:.4f}"
        for name, features in drifted(batches).items()
        for feature, d in features.items()
    ]


def outcome_line(decision: dict[str, str], gate_only: bool, blessing: dict | None) -> str:
    """The run's outcome, as `make run-dag` prints it on its last line."""
    if decision["action"] == "quarantine":
        return f"quarantined: {decision['reason']}"
    if decision["action"] == "skip":
        return f"skipped: {decision['reason']}"
    if gate_only:
        return f"gate only: would retrain ({decision['reason']})"
    if blessing is None:
        raise ValueError("a retraining run ended without reading the blessing")
    if blessing["blessed"]:
        return f"retrained version={blessing['version']}"
    return f"not blessed: {blessing['reason']}"
