"""One run of the live monitor: the predictions logged since the last run against the serving model's training data.

    python -m live_monitoring.monitor [--run-id ID] [--params JSON]   # what the DAG's `analyze` task does

The window (live_monitoring/window.py) holds the predictions logged since the previous run, at most `window_hours`
old; the verdict is about the newest model version in it (its predictions only; others are counted and left out),
compared with that version's lineage baseline (training rows and statistics, eval split scores). Fewer than
`min_predictions`: no verdict. Writes the run's record (`live_state_dir/runs/<run>.json`, `last_run.json`) and its
HTML report (`reports/live/<run>.html`). Each run also takes in the waiting outcome files and reports the realized
and estimated performance of every version (outcomes/join.py: the record's `performance`). The record's
`outcome` is the line `make run-monitor` ends with, `; realized auc=...` or `; estimated auc=...` appended. ML
environment (pandas, TFDV); a rerun of the same run id reads the same window and gives the same drift verdict (its
performance section counts the outcomes known by then).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from common.config import MODEL_NAME, settings
from common.records import batch_ledger
from live_monitoring import window as prediction_window
from serving import logged_predictions

DEFAULTS: dict[str, Any] = {
    "min_predictions": 200,
    "window_hours": 24.0,
    "false_alarm_rate": 0.01,
    "psi_alert": 0.25,
    "drift_thresholds": {},
}


def outcome_line(record: dict[str, Any]) -> str:
    """`live: no drift (<n> predictions, version <v>)`, `live drift: <f>[, <f>...] (...)` or `live: too few ...`."""
    n, version = record["predictions"], record["version"]
    if record["verdict"] == "too_few":
        return f"live: too few predictions ({n} < {record['min_predictions']})"
    if record["verdict"] == "drift":
        return f"live drift: {', '.join(record['drifted'])} ({n} predictions, version {version})"
    return f"live: no drift ({n} predictions, version {version})"


def baseline(model: dict[str, Any]):
    """The lineage baseline of a model version (live_drift.Baseline)."""
    from live_monitoring import drift as live_drift
    from live_monitoring import score_baseline
    from tfx_modules.data_gate import dataset, validation

    ledger = batch_ledger.ledger()
    raw = dataset.read_many([ledger[sha]["path"] for sha in model["batches"]])
    folder = Path(model["baseline"])
    return live_drift.Baseline(
        version=model["version"],
        view=validation.model_view(raw),
        raw=raw,
        statistics=validation.load_statistics(folder / "drift_stats.pbtxt"),
        scores=score_baseline.eval_scores(model),
        folder=folder,
    )


def _model(version: int | None) -> dict[str, Any]:
    models = batch_ledger.lineage()["models"]
    found = (
        next((m for m in models if m["version"] == version), None) if version is not None else (models or [None])[-1]
    )
    if found is None:
        raise LookupError(f"model version {version} has no lineage entry (no baseline to compare live traffic with)")
    return found


def run(run_id: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Judge the run's window; returns the run's record (with its `outcome` line)."""
    from live_monitoring import drift as live_drift
    from live_monitoring import report as live_report
    from outcomes import join as outcome_join
    from tfx_modules.data_gate import validation

    options = {**DEFAULTS, **{k: v for k, v in (params or {}).items() if v is not None}}
    window = prediction_window.claim(run_id)
    frame, warnings = logged_predictions.read(window)
    frame = frame[frame["model"] == MODEL_NAME]
    fresh = frame["time"] >= time.time() - float(options["window_hours"]) * 3600
    stale, frame = int((~fresh).sum()), frame[fresh]
    serving = batch_ledger.serving_model()
    versions = frame["version"].fillna(serving["version"] if serving else -1).astype(int)
    version = int(versions.max()) if len(frame) else (serving["version"] if serving else None)
    live = frame[versions == version]
    record: dict[str, Any] = {
        "run_id": run_id,
        "time": time.time(),
        "window": window,
        "version": version,
        "predictions": len(live),
        "other_versions": len(frame) - len(live),
        "stale": stale,
        "min_predictions": int(options["min_predictions"]),
        "window_hours": float(options["window_hours"]),
        "warnings": warnings,
        "drifted": [],
        "result": None,
    }
    training_stats = window_stats = None
    if len(live) < record["min_predictions"]:
        record["verdict"] = "too_few"
    else:
        base = baseline(_model(version))
        result = live_drift.assess(
            live,
            base,
            thresholds=options["drift_thresholds"],
            psi_alert=float(options["psi_alert"]),
            false_alarm_rate=float(options["false_alarm_rate"]),
        )
        record.update(result=result, drifted=result["drifted"], verdict="drift" if result["drifted"] else "no_drift")
        window_stats, training_stats = validation.drift_statistics(live), base.statistics
    record["performance"] = outcome_join.update(run_id, version)
    record["outcome"] = outcome_line(record) + record["performance"]["serving"]["line"]
    report = settings().reports_dir / "live" / f"{batch_ledger.safe_name(run_id)}.html"
    record["report"] = str(live_report.write(report, record, window_stats, training_stats))
    prediction_window.save_run(record)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-id", default=f"manual__{time.strftime('%Y-%m-%dT%H:%M:%S')}")
    parser.add_argument("--params", default="{}", help="DAG params as JSON, e.g. '{\"min_predictions\": 500}'")
    args = parser.parse_args(argv)
    print(run(args.run_id, json.loads(args.params))["outcome"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
