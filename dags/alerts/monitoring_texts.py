"""The monitoring DAG's alert texts: which features drifted, by how much against which threshold; the serving
version's performance decay; each quarantined outcome file; and where to look."""

from __future__ import annotations


def drift_lines(record: dict) -> list[str]:
    """'person_income: jensen_shannon 0.2101 > 0.1000, CSI 0.4100 (significant) > 0.2500' per drifted feature."""
    result = record["result"]
    lines = []
    for name, d in result["features"].items():
        if d["drifted"]:
            lines.append(
                f"{name}: {d['measure']} {d['value']:.4f} (threshold {d['threshold']:.4f}), "
                f"CSI {d['csi']:.4f} {d['csi_band']} (threshold {d['csi_threshold']:.4f})"
            )
    score = result["score"]
    if score["drifted"]:
        lines.append(f"score: PSI {score['psi']:.4f} {score['band']} (threshold {score['threshold']:.4f})")
    return [
        *lines,
        f"window: {record['predictions']} predictions of model version {record['version']}",
        f"report: {record['report']}",
    ]


def performance_alerts(record: dict) -> list[tuple[str, list[str]]]:
    """(subject, lines) for the performance decay and for each outcome file quarantined by the run."""
    performance, report = record["performance"], f"report: {record['report']}"
    found = []
    serving = performance["serving"]
    if serving["decay"]:
        lines = [serving["decay"], f"{performance['labelled']} predictions with outcomes", report]
        found.append((f"performance decay: model version {serving['version']}", lines))
    for entry in performance["files"]:
        if entry["status"] == "quarantined":
            lines = [f"reason: {entry['reason']}", f"kept at: {entry['path']}", report]
            found.append((f"outcome file {entry['name']} quarantined", lines))
    return found
