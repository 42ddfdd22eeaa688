"""The HTML report of one live-monitoring run: the verdict, per feature each measure against its threshold, the
score's PSI, realized and estimated performance (outcomes/report.py), and the window's distributions
against the training data (the pictures of the batch drift report). ML environment (matplotlib)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

from outcomes import report as performance_report
from tfx_modules.data_gate.drift_report import STYLE, figure, table

if TYPE_CHECKING:
    from tensorflow_metadata.proto.v0 import statistics_pb2


def _verdict(drifted: bool) -> str:
    return "<span class=bad>drift</span>" if drifted else "<span class=ok>ok</span>"


def _feature_rows(found: dict[str, dict[str, Any]]) -> list[tuple]:
    return [
        (
            html.escape(name),
            d["measure"],
            f"{d['value']:.4f}",
            f"{d['threshold']:.4f} (base {d['base_threshold']:.4f})",
            f"{d['csi']:.4f} ({d['csi_band']})",
            f"{d['csi_threshold']:.4f}",
            _verdict(d["drifted"]),
        )
        for name, d in found.items()
    ]


def write(
    path: Path,
    record: dict[str, Any],
    window: statistics_pb2.DatasetFeatureStatisticsList | None = None,
    training: statistics_pb2.DatasetFeatureStatisticsList | None = None,
) -> Path:
    """Write the report of a run's `record` (live_monitor.run's result); statistics are drawn when given."""
    parts = [
        f"<h1>Live monitoring: run {html.escape(record['run_id'])}</h1>",
        f"<p><b>{html.escape(record['outcome'])}</b></p>",
        f"<p>{record['predictions']} predictions of model version {record['version']} in the window "
        f"(minimum {record['min_predictions']}); {record['other_versions']} of other versions and "
        f"{record['stale']} older than {record['window_hours']} h left out.</p>",
    ]
    if record.get("warnings"):
        parts.append(
            "<h2>Skipped</h2><ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in record["warnings"]) + "</ul>"
        )
    result = record.get("result")
    if result:
        parts.append(
            f"<p>Thresholds are calibrated on {result['calibration_size']} resampled training rows "
            f"(per-test false-alarm rate {result['alpha_per_test']:.5f}).</p>"
        )
        header = ("feature", "measure", "value", "threshold", "CSI", "CSI threshold", "")
        parts.append("<h2>Features</h2>" + table(header, _feature_rows(result["features"])))
        score = result["score"]
        row = (f"{score['psi']:.4f} ({score['band']})", f"{score['threshold']:.4f}", f"{score['live_mean']:.4f}")
        row += (f"{score['eval_mean']:.4f}", _verdict(score["drifted"]))
        parts.append("<h2>Score</h2>" + table(("PSI", "threshold", "live mean", "eval split mean", ""), [row]))
    if record.get("performance"):
        parts.append(performance_report.section(record["performance"]))
    if window is not None:
        parts.append(
            f'<h2>Distributions</h2><img alt="distributions" src="{figure(window, training, ("live", "training"))}">'
        )
    page = (
        f"<!doctype html><html><head><meta charset=utf-8><title>Live monitoring {html.escape(record['run_id'])}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
