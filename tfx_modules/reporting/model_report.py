"""A one-page evaluation report for a pushed model: metrics with the calibration error, each member of the blend
beside the blend, ROC and calibration plots, the slice table, the fairness table.

A person deciding whether to trust a new model should not need TFMA's notebook widgets; this writes plain HTML
(plots embedded as PNG) and a JSON twin for machines, under `reports_dir`. An undefined metric reads "n/a".
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from matplotlib.figure import Figure

from common import config
from common.config import Settings
from common.metric_format import figure
from tfx_modules.node_runner import pipeline_run_id
from tfx_modules.reporting.run_result import RunResult, overall_plot, read_run_result, reliability

OVERALL_COLUMNS = (
    "example_count",
    "auc",
    "auc_precision_recall",
    "binary_accuracy",
    "precision",
    "recall",
    "calibration",
    "expected_calibration_error",
)
SLICE_COLUMNS = ("example_count", "mean_label", "auc", "binary_accuracy", "precision", "recall", "calibration")
MEMBER_COLUMNS = ("auc", "binary_accuracy", "log_loss", "expected_calibration_error")
MEMBER_NAMES = {
    "trees": "monotone gradient-boosted trees (TF-DF), average logit",
    "calibrated": "trees, calibrated (served)",
}


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _roc_and_calibration(plot) -> tuple[str, str]:
    """Two PNGs: ROC from the confusion matrices at thresholds, reliability from the calibration histogram."""
    roc_figure = Figure(figsize=(4, 4))
    axis = roc_figure.subplots()
    matrices = plot.confusion_matrix_at_thresholds.matrices
    fpr = [m.false_positives / max(m.false_positives + m.true_negatives, 1) for m in matrices]
    tpr = [m.true_positives / max(m.true_positives + m.false_negatives, 1) for m in matrices]
    axis.plot(fpr, tpr, label="model")
    axis.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    axis.legend(loc="lower right")
    roc = _png(roc_figure)

    calibration_figure = Figure(figsize=(4, 4))
    axis = calibration_figure.subplots()
    bins = reliability(plot)  # TFMA's 10,000 fine buckets in ten coarse ones: a readable reliability curve
    filled = bins.filled
    axis.plot(bins.prediction[filled] / bins.count[filled], bins.label[filled] / bins.count[filled], "o-")
    axis.plot([0, 1], [0, 1], "--", color="grey")
    axis.set(xlabel="mean predicted probability", ylabel="observed default rate", title="Calibration")
    return roc, _png(calibration_figure)


def metrics_table(first: str, columns: tuple[str, ...], rows: dict[str, dict[str, float | None]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in (first, *columns))
    body = "".join(
        "<tr><td>"
        + html.escape(name)
        + "</td>"
        + "".join(f"<td>{figure(values[c], '.4g')}</td>" if c in values else "<td></td>" for c in columns)
        + "</tr>"
        for name, values in rows.items()
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _members(members: dict) -> str:
    """The Trainer's view of the eval split: the trees' average logit, and its calibration that is served."""
    if not members:
        return "<p>no member metrics recorded</p>"
    platt = members["calibration"]
    rows = {MEMBER_NAMES.get(name, name): values for name, values in members["members"].items()}
    return metrics_table("member", MEMBER_COLUMNS, rows) + (
        f"<p>logit = average of {len(members['tree_models'])} tree model(s)' logits; probability ="
        f" sigmoid({platt['slope']:.3f} &times; logit {platt['upper_slope']:+.3f} &times; max(logit, 0)"
        f" {platt['intercept']:+.3f}) (Platt scaling with two slopes, fitted on the eval split)</p>"
    )


FAIRNESS_GROUP_COLUMNS = (
    "count",
    "positives",
    "auc",
    "positive_rate",
    "true_positive_rate",
    "false_positive_rate",
)


def fairness_section(fairness: dict) -> str:
    """Per sensitive feature: each group's metrics, then the between-group differences against their limits."""
    if not fairness:
        return "<p>no fairness table recorded</p>"
    parts = []
    for feature, groups in fairness["groups"].items():
        rows = {g["group"]: g for g in groups}
        limits = fairness["limits"].get(feature, {})
        diffs = "; ".join(
            f"{d['metric']} {d['value']:.3f} ({' vs '.join(d['groups'])}, {d['rate']})"
            + (f" limit {limits[d['metric']]:.3f}" if d["metric"] in limits else " no limit")
            for d in fairness["differences"][feature]
        )
        parts.append(f"<h3>{html.escape(feature)}</h3>{metrics_table('group', FAIRNESS_GROUP_COLUMNS, rows)}")
        parts.append(f"<p>{html.escape(diffs)}</p>")
    over = [v["detail"] for v in fairness.get("violations", [])]
    parts.append(f"<p>over a limit: {html.escape('; '.join(over)) if over else 'none'}</p>")
    return "".join(parts)


def write_model_report(outcome: RunResult, settings: Settings) -> Path:
    """Write the report (HTML + JSON) of a pushed model, or `run-<id>` for one that was not pushed; return the HTML."""
    path = (
        settings.model_report(outcome.version)
        if outcome.version is not None
        else settings.reports_dir / f"run-{outcome.run_id}.html"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(outcome.to_dict(), indent=2))
    plot = overall_plot(outcome.evaluation_uri) if outcome.evaluation_uri else None
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
<h2>Overall (eval split)</h2>{metrics_table("slice", OVERALL_COLUMNS, {"overall": outcome.metrics})}
<h2>Members (eval split, as the Trainer measured them)</h2>{_members(outcome.members)}
<h2>Plots</h2>{images or "<p>no plots recorded</p>"}
<h2>Slices</h2>{metrics_table("slice", SLICE_COLUMNS, dict(sorted(outcome.slices.items())))}
<h2>Fairness (eval split, decision threshold {settings.decision_threshold})</h2>{fairness_section(outcome.fairness)}
</body></html>"""
    path.write_text(page)
    return path


def blessing(airflow_run_id: str) -> dict:
    """What the DAG needs of its pipeline run: blessed or not, pushed version, metrics, and the report written here."""
    settings = config.settings()
    outcome = read_run_result(settings, pipeline_run_id(airflow_run_id))
    return {**outcome.to_dict(), "report": str(write_model_report(outcome, settings))}
