"""Outcomes become training data: each run's newly joined predictions (raw features as logged + outcome) are written
as a batch into the retraining DAG's incoming folder, where they pass the same typed read, schema validation,
quarantine and drift gate as any batch.

The lineage (`state_dir/outcome_batches.json`) records per batch its content hash (the retraining ledger's key), the
run that wrote it and the predictions in it (application and request ids, served version); `fed()` then says which
predictions trained a model version (through that version's batches in tfx_modules/data_gate/intake.py's lineage). A
prediction goes into one batch only; one whose logged features cannot make a training row (a required feature
missing) is counted and left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from common import features
from common.config import settings
from common.records import batch_ledger
from outcomes.intake import ID, OUTCOME
from tfx_modules.data_gate import dataset

REQUIRED = tuple(f.name for f in features.FEATURES if not f.optional)


def _path() -> Path:
    return settings().state_dir / "outcome_batches.json"


def lineage() -> dict[str, list[dict[str, Any]]]:
    """`{"batches": [{"name", "sha256", "run_id", "rows", "skipped", "versions", "application_ids", ...}]}`."""
    return batch_ledger.load_json(_path(), {"batches": []})


def write(joined: pd.DataFrame, run_id: str) -> dict[str, Any] | None:
    """The batch of the labelled predictions not in an earlier batch (None when there are none)."""
    history = lineage()
    done = {a for b in history["batches"] for a in b["application_ids"]}
    new = joined[joined[OUTCOME].notna() & ~joined[ID].isin(done)]
    complete = new[list(REQUIRED)].notna().all(axis=1)
    rows = new[complete]
    if rows.empty:
        return None
    frame = rows[list(features.FEATURE_NAMES)].assign(**{features.LABEL: rows[OUTCOME].astype("int64")})
    target = dataset.write_canonical(frame, settings().incoming_dir / f"outcomes-{batch_ledger.safe_name(run_id)}.csv")
    entry = {
        "name": target.name,
        "sha256": batch_ledger.sha256(target),
        "run_id": run_id,
        "rows": len(rows),
        "skipped": int((~complete).sum()),
        "versions": {str(v): int(n) for v, n in rows["version"].value_counts().sort_index().items()},
        "application_ids": rows[ID].tolist(),
        "request_ids": rows["request_id"].tolist(),
    }
    history["batches"].append(entry)
    batch_ledger.save_json(_path(), history)
    return {k: v for k, v in entry.items() if k not in ("application_ids", "request_ids")}


def fed(version: int) -> list[str]:
    """The application ids of the logged predictions whose outcomes trained model `version`."""
    model = next((m for m in batch_ledger.lineage()["models"] if m["version"] == version), None)
    trained = set(model["batches"]) if model else set()
    return [a for b in lineage()["batches"] if b["sha256"] in trained for a in b["application_ids"]]
