"""The performance section of a live-monitoring report: outcome files taken in, realized and estimated figures per
model version and per vintage, the serving version's calibration by score decile, the training batch written."""

from __future__ import annotations

import html
from typing import Any

from tfx_modules.data_gate.drift_report import table

REALIZED = ("auc", "pr_auc", "accuracy", "ks", "gini", "ece")


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _row(name: str, found: dict[str, Any]) -> tuple:
    realized, estimated = found["realized"] or {}, found["estimated"] or {}
    figures = [_number(realized.get(k)) for k in REALIZED]
    return (
        html.escape(name),
        found["labelled"],
        found["unlabelled"],
        *figures,
        _number(estimated.get("auc")),
        _number(estimated.get("accuracy")),
    )


def _file_row(entry: dict[str, Any]) -> tuple:
    counts = ", ".join(f"{k} {entry[k]}" for k in ("rows", "new", "repeats", "waiting") if k in entry)
    status = entry["status"]
    shown = f"<span class=bad>{status}</span>" if status == "quarantined" else status
    return (html.escape(entry["name"]), shown, html.escape(entry.get("reason") or counts))


def section(performance: dict[str, Any]) -> str:
    """HTML for a run record's `performance`."""
    serving = performance["serving"]
    parts = ["<h2>Performance</h2>"]
    if serving["decay"]:
        parts.append(f"<p><b class=bad>Decay: {html.escape(serving['decay'])}</b></p>")
    parts.append(
        f"<p>{performance['labelled']} predictions with outcomes; {performance['waiting']} outcomes wait for their "
        f"prediction. Evaluation AUC of version {serving['version']}: {_number(serving['evaluation_auc']) or 'n/a'}. "
        "Realized figures are on the labelled predictions, estimated ones (CBPE) on the unlabelled.</p>"
    )
    if performance["files"]:
        rows = [_file_row(entry) for entry in performance["files"]]
        parts.append("<h3>Outcome files</h3>" + table(("file", "status", "counts or reason"), rows))
    header = ("", "labelled", "unlabelled", *REALIZED, "estimated auc", "estimated accuracy")
    versions = performance["versions"]
    parts.append("<h3>By version</h3>" + table(header, [_row(f"version {v}", f) for v, f in versions.items()]))
    current = versions.get(str(serving["version"]))
    if current:
        rows = [_row(week, found) for week, found in current["vintages"].items()]
        parts.append(f"<h3>Version {serving['version']} by vintage (week of the prediction)</h3>" + table(header, rows))
        if current["realized"]:
            deciles = [
                (i + 1, d["count"], _number(d["predicted"]), _number(d["observed"]))
                for i, d in enumerate(current["realized"]["deciles"])
            ]
            parts.append(
                "<h3>Calibration by score decile</h3>" + table(("decile", "n", "predicted", "observed"), deciles)
            )
    compared = performance.get("rollouts") or []
    if compared:
        lines = "".join(f"<li>{html.escape(entry['line'])}</li>" for entry in compared)
        parts.append(f"<h3>Champion against challenger (rollout shadow pairs)</h3><ul>{lines}</ul>")
    batch = performance["batch"]
    if batch:
        parts.append(
            f"<p>Training batch <code>{html.escape(batch['name'])}</code>: {batch['rows']} joined predictions "
            f"({batch['skipped']} without a required feature left out), now in the retraining DAG's incoming "
            "folder.</p>"
        )
    return "".join(parts)
