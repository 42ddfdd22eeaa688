"""A one-page evaluation report for a pushed model: metrics, ROC and calibration plots, the slice table.

A person deciding whether to trust a new model should not need TFMA's notebook widgets; this writes plain HTML
(plots embedded as PNG) and a JSON twin for machines, under `reports_dir`.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import tensorflow_model_analysis as tfma
from matplotlib.figure import Figure

from tfx_modules import config
from tfx_modules.config import Settings
from tfx_modules.node_runner import pipeline_run_id
from tfx_modules.outcome import CANDIDATE, Outcome, pipeline_outcome

CALIBRATION_BINS = 10
SLICE_COLUMNS = ("example_count", "auc", "binary_accuracy", "precision", "recall", "calibration")


def _overall_plots(evaluation_uri: str):
    for plots in tfma.load_plots(evaluation_uri):
        if not plots.slice_key.single_slice_keys:
            for kv in plots.plot_keys_and_values:
                if kv.key.model_name in CANDIDATE:
                    return kv.value
    return None


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _roc_and_calibration(plot) -> tuple[str, str]:
    """Two PNGs: ROC from the confusion matrices at thresholds, reliability from the calibration histogram."""
    figure = Figure(figsize=(4, 4))
    axis = figure.subplots()
    matrices = plot.confusion_matrix_at_thresholds.matrices
    fpr = [m.false_positives / max(m.false_positives + m.true_negatives, 1) for m in matrices]
    tpr = [m.true_positives / max(m.true_positives + m.false_negatives, 1) for m in matrices]
    axis.plot(fpr, tpr, label="model")
    axis.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    axis.legend(loc="lower right")
    roc = _png(figure)

    figure = Figure(figsize=(4, 4))
    axis = figure.subplots()
    # TFMA keeps 10,000 fine buckets; ten coarse ones make a readable reliability curve.
    count, label, prediction = [0.0] * CALIBRATION_BINS, [0.0] * CALIBRATION_BINS, [0.0] * CALIBRATION_BINS
    for bucket in plot.calibration_histogram_buckets.buckets:
        n = bucket.num_weighted_examples.value
        if n > 0:
            i = min(int(bucket.total_weighted_refined_prediction.value / n * CALIBRATION_BINS), CALIBRATION_BINS - 1)
            count[i] += n
            label[i] += bucket.total_weighted_label.value
            prediction[i] += bucket.total_weighted_refined_prediction.value
    bins = [i for i in range(CALIBRATION_BINS) if count[i]]
    axis.plot([prediction[i] / count[i] for i in bins], [label[i] / count[i] for i in bins], "o-")
    axis.plot([0, 1], [0, 1], "--", color="grey")
    axis.set(xlabel="mean predicted probability", ylabel="observed default rate", title="Calibration")
    return roc, _png(figure)


def _table(rows: dict[str, dict[str, float]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("slice", *SLICE_COLUMNS))
    body = "".join(
        "<tr><td>"
        + html.escape(name)
        + "</td>"
        + "".join(f"<td>{values[c]:.4g}</td>" if c in values else "<td></td>" for c in SLICE_COLUMNS)
        + "</tr>"
        for name, values in rows.items()
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def write_model_report(outcome: Outcome, settings: Settings) -> Path:
    """Write the report (HTML + JSON) of a pushed model, or `run-<id>` for one that was not pushed; return the HTML."""
    path = (
        settings.model_report(outcome.version)
        if outcome.version is not None
        else settings.reports_dir / f"run-{outcome.run_id}.html"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(outcome.to_dict(), indent=2))
    plot = _overall_plots(outcome.evaluation_uri) if outcome.evaluation_uri else None
    images = (
        "".join(
            f'<img alt="{alt}" src="data:image/png;base64,{png}">'
            for alt, png in zip(("ROC curve", "Calibration curve"), _roc_and_calibration(plot), strict=True)
        )
        if plot
        else ""
    )
    verdict = f"blessed, pushed as version {outcome.version}" if outcome.blessed else f"not blessed: {outcome.reason}"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>credit_risk {html.escape(path.stem)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}</style></head><body>
<h1>credit_risk model report</h1><p>Pipeline run <code>{html.escape(outcome.run_id)}</code>: {html.escape(verdict)}</p>
<h2>Overall (eval split)</h2>{_table({"overall": outcome.metrics})}
<h2>Plots</h2>{images or "<p>no plots recorded</p>"}
<h2>Slices</h2>{_table(dict(sorted(outcome.slices.items())))}
</body></html>"""
    path.write_text(page)
    return path


def blessing(airflow_run_id: str) -> dict:
    """What the DAG needs of its pipeline run: blessed or not, pushed version, metrics, and the report written here."""
    settings = config.settings()
    outcome = pipeline_outcome(settings, pipeline_run_id(airflow_run_id))
    return {**outcome.to_dict(), "report": str(write_model_report(outcome, settings))}
