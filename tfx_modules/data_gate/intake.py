"""The intake of data batches: each pending batch is read typed, validated with TFDV against the serving model's
schema, quarantined with its reason or accepted, and drift-checked against that model's training data.

Everything it decides goes into the batch ledger and lineage (common/records/batch_ledger.py). Pandas and TFDV are
imported when called, in the ML environment.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from common.config import settings
from common.records import batch_ledger
from common.records.batch_ledger import (
    PURGED,
    drop_duplicate,
    filed,
    fingerprint,
    ledger,
    lineage,
    load_json,
    pending,
    quarantine,
    safe_name,
    save_json,
    serving_model,
    sha256,
    stored_name,
)

if TYPE_CHECKING:
    import pandas as pd
    from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

    Statistics = statistics_pb2.DatasetFeatureStatisticsList


def accept(path: Path, df: pd.DataFrame, sha: str, run_id: str) -> dict:
    """Write the batch canonically to the accepted folder, record it, then drop the incoming file."""
    from tfx_modules.data_gate import dataset

    target = dataset.write_canonical(df, settings().accepted_dir / stored_name(path, sha, ".csv"))
    return filed(path, sha, run_id, target, rows=len(df))


def record_model(run_id: str, outcome: dict, shas: list[str]) -> dict:
    """Lineage of a blessed, pushed model: its batches, metrics, and the schema and baseline statistics of its
    training data. Idempotent per version."""
    from tfx_modules.data_gate import dataset, validation

    known = next((m for m in lineage()["models"] if m["version"] == outcome["version"]), None)
    if known:
        return known
    entries = ledger()
    df = dataset.read_many([entries[sha]["path"] for sha in shas])
    folder = batch_ledger.baseline_dir(outcome["version"])
    validation.write_schema(validation.schema(validation.statistics(df)), folder / "schema.pbtxt")
    validation.write_statistics(validation.drift_statistics(df), folder / "drift_stats.pbtxt")
    model = {
        "version": outcome["version"],
        "run_id": run_id,
        "batches": shas,
        "fingerprint": fingerprint(shas),
        "rows": len(df),
        "metrics": outcome.get("metrics", {}),
        "model_path": outcome.get("model_path"),
        "report": outcome.get("report"),
        "baseline": str(folder),
        "time": time.time(),
    }
    return batch_ledger.add_model(model)


def thresholds(overrides: dict[str, float] | None) -> dict[str, float]:
    """Drift thresholds of a run: the configured ones, overridden per feature by the run's params."""
    from common.config import default_drift_thresholds

    defaults = default_drift_thresholds()
    unknown = sorted(set(overrides or {}) - set(defaults))
    if unknown:
        raise ValueError(f"drift thresholds given for unknown features {unknown}; known: {', '.join(defaults)}")
    return {**defaults, **{k: float(v) for k, v in (overrides or {}).items()}}


def intake(run_id: str, only: str | None, threshold_overrides: dict[str, float] | None) -> dict:
    """Validate, file and drift-check every pending batch; write the run's report; return the run's record.

    The record accumulates per run id, so a retried or rerun task reports every batch the run has filed.
    """
    from tfx_modules.data_gate import drift_report, validation

    limits = thresholds(threshold_overrides)
    model = serving_model()
    expected = validation.load_schema(Path(model["baseline"]) / "schema.pbtxt") if model else None
    baseline = validation.load_statistics(Path(model["baseline"]) / "drift_stats.pbtxt") if model else None
    folder = settings().reports_dir / safe_name(run_id)
    record = load_json(folder / "report.json", {"run_id": run_id, "batches": []})
    record.update(serving_version=model["version"] if model else None, report=str(folder / "report.html"))
    stats = {}
    for path in pending(only):
        sha = sha256(path)
        if ledger().get(sha, {}).get("status", PURGED) != PURGED:  # content removed by retention comes in anew
            record["batches"].append(drop_duplicate(path, sha, run_id))
            continue
        result, stats[sha] = _check(path, sha, run_id, expected, baseline, limits)
        record["batches"].append(result)
        save_json(folder / "report.json", record)
    label = f"training data of model version {model['version']}" if model else "none (no model yet)"
    drift_report.write(folder / "report.html", run_id, record["batches"], stats, baseline, label)
    save_json(folder / "report.json", record)
    return record


def _check(
    path: Path,
    sha: str,
    run_id: str,
    expected: schema_pb2.Schema | None,
    baseline: Statistics | None,
    limits: dict[str, float],
) -> tuple[dict, Statistics | None]:
    """Quarantine an unreadable or anomalous batch; accept and drift-check a good one (with its drift stats)."""
    from tfx_modules.data_gate import dataset, validation

    try:
        df = dataset.read_batch(path)
    except dataset.DataError as err:
        return {**quarantine(path, sha, run_id, err.reason, {}), "sha256": sha}, None
    raw = validation.statistics(df)
    found = validation.anomalies(raw, expected if expected is not None else validation.schema(raw))
    if found:
        reason = "TFDV anomalies: " + "; ".join(f"{column}: {text.strip()}" for column, text in found.items())
        return {**quarantine(path, sha, run_id, reason, found), "sha256": sha}, None
    view = validation.drift_statistics(df)
    entry = accept(path, df, sha, run_id)
    drift = validation.drift(view, baseline, limits) if baseline is not None else {}
    return {**entry, "sha256": sha, "drift": drift}, view
