"""The live-drift alert's text: which features drifted, by how much against which threshold, and where to look."""

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
