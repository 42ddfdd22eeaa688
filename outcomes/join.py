"""Outcomes joined to the predictions they judge, and the served model's realized and estimated performance.

Each live-monitoring run reads every prediction still in the log (not only its window: outcomes come months later,
so CREDIT_RISK_PREDICTION_LOG_RETENTION_DAYS must outlast the outcome delay), takes in the waiting outcome files
(outcomes/intake.py), joins by `application_id` (the newest prediction of an application is its decision), and
computes per model version and per vintage (the ISO week of the prediction) the realized figures on the labelled
predictions and the CBPE estimate on the unlabelled ones (outcomes/performance.py). Outcomes of applications not
logged yet wait in the outcome store and join in a later run. Decay: the serving version's realized AUC, on at
least `min_labelled` outcomes, below the blessing floor (CREDIT_RISK_MIN_AUC) or more than CREDIT_RISK_DECAY_MARGIN
below its own evaluation AUC; with CREDIT_RISK_DECAY_ON_ESTIMATE, the estimated AUC below the same floors when too
few outcomes are in.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from common.config import MODEL_NAME, settings
from common.features import LABEL
from common.records import batch_ledger
from outcomes import intake, performance, training_batches
from outcomes.intake import OUTCOME
from serving import logged_predictions


def _whole_log() -> pd.DataFrame:
    """Every readable logged prediction of the model with an application id and a probability."""
    frame, _ = logged_predictions.read(logged_predictions.whole_log())
    return frame[(frame["model"] == MODEL_NAME) & frame["application_id"].notna() & frame["probability"].notna()]


def _shadow(frame: pd.DataFrame) -> pd.Series:
    """Rows that are a challenger's answer to a mirrored call (no client got it)."""
    return frame["shadow"].fillna(False).astype(bool) if "shadow" in frame else pd.Series(False, index=frame.index)


def logged(default_version: int | None, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every logged prediction the client got, the newest per application, with its `vintage` (what cannot be read
    is skipped with a warning, as logged_predictions.read does)."""
    frame = _whole_log() if frame is None else frame
    frame = frame[~_shadow(frame)]
    frame = frame.sort_values("time", kind="mergesort").drop_duplicates(intake.ID, keep="last")
    frame["version"] = frame["version"].fillna(-1 if default_version is None else default_version).astype(int)
    week = pd.to_datetime(frame["time"], unit="s", utc=True).dt.isocalendar()
    frame["vintage"] = week["year"].astype(str) + "-W" + week["week"].astype(str).str.zfill(2)
    return frame.reset_index(drop=True)


def join(predictions: pd.DataFrame, known: pd.DataFrame) -> pd.DataFrame:
    """The predictions with their `outcome` (NaN while unknown)."""
    status = known.set_index(intake.ID)[LABEL]
    return predictions.assign(**{OUTCOME: predictions[intake.ID].map(status).astype(float)})


def figures(rows: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """Counts, realized figures of the labelled rows, CBPE estimate of the unlabelled ones."""
    probability = rows["probability"].to_numpy(dtype=float)
    label = rows["label"].fillna(pd.Series(probability >= threshold, index=rows.index).astype(int)).to_numpy()
    known = rows[OUTCOME].notna().to_numpy()
    return {
        "labelled": int(known.sum()),
        "unlabelled": int((~known).sum()),
        "realized": performance.realized(probability[known], label[known], rows[OUTCOME].to_numpy()[known]),
        "estimated": performance.estimated(probability[~known], label[~known]),
    }


def assess(joined: pd.DataFrame, threshold: float) -> dict[str, dict[str, Any]]:
    """Per model version (str keys, for JSON): its figures, and per vintage the same."""
    versions = {}
    for version, rows in joined.groupby("version"):
        by_week = {str(week): figures(part, threshold) for week, part in rows.groupby("vintage")}
        versions[str(version)] = {**figures(rows, threshold), "vintages": by_week}
    return versions


def champion_vs_challenger(frame: pd.DataFrame, known: pd.DataFrame) -> list[dict[str, Any]]:
    """Per rollout challenger: both models' realized ROC-AUC on the same applicants (the shadow pairs whose outcomes
    arrived) and DeLong's paired test, with a line a person can read."""
    shadow = _shadow(frame)
    if not shadow.any():
        return []
    keys = ["request_id", intake.ID]
    served = frame[~shadow & (frame.get("role") == "champion")][[*keys, "probability", "version"]]
    pairs = frame[shadow][[*keys, "probability", "version"]].merge(served, on=keys, suffixes=("", "_champion"))
    pairs = join(pairs, known).dropna(subset=[OUTCOME])
    found = []
    for version, rows in pairs.groupby("version"):
        champions = sorted({int(v) for v in rows["version_champion"].dropna()})
        test = performance.delong(rows["probability_champion"], rows["probability"], rows[OUTCOME])
        entry = {"challenger": int(version), "champions": champions, "pairs": len(rows), "delong": test}
        if test is None:
            entry["line"] = f"challenger {int(version)}: {len(rows)} paired outcomes, not both classes yet"
        else:
            entry["line"] = (
                f"challenger {int(version)} against champion {'/'.join(map(str, champions))} on the same "
                f"{test['count']} applicants ({test['defaults']} defaults): realized AUC {test['auc_challenger']:.3f} "
                f"vs {test['auc_champion']:.3f}, DeLong z={test['z']:.2f}, p={test['p_value']:.3g}"
            )
        found.append(entry)
    return found


def _evaluation_auc(version: int | None) -> float | None:
    model = next((m for m in batch_ledger.lineage()["models"] if m["version"] == version), None)
    return (model or {}).get("metrics", {}).get("auc")


def judge(found: dict[str, Any] | None, version: int | None) -> dict[str, Any]:
    """The serving version's line (`; realized auc=...` or `; estimated auc=...`, empty with neither) and its decay
    verdict: the reason when its AUC is under a floor, else None."""
    s = settings()
    evaluation = _evaluation_auc(version)
    verdict = {"version": version, "evaluation_auc": evaluation, "line": "", "decay": None, "kind": None, "auc": None}
    verdict.update(floor=s.min_auc, margin=s.decay_margin, min_labelled=s.min_labelled)
    if found and found["realized"] is not None:
        auc, n = found["realized"]["auc"], found["labelled"]
        line, judged = f"; realized auc={auc:.3f} ({n} labelled, version {version})", n >= s.min_labelled
        verdict.update(kind="realized", auc=auc, line=line)
    elif found and found["estimated"] is not None:
        auc = found["estimated"]["auc"]
        verdict.update(kind="estimated", auc=auc, line=f"; estimated auc={auc:.3f} (version {version})")
        judged = s.decay_on_estimate
    else:
        return verdict
    floors = [(s.min_auc, f"the blessing floor {s.min_auc:.3f}")]
    if evaluation is not None:
        floors.append((evaluation - s.decay_margin, f"its evaluation AUC {evaluation:.3f} - {s.decay_margin:.3f}"))
    under = [text for floor, text in floors if auc < floor]
    if judged and under:
        verdict["decay"] = f"{verdict['kind']} AUC {auc:.3f} of version {version} is below {' and '.join(under)}"
    return verdict


def update(run_id: str, version: int | None) -> dict[str, Any]:
    """Take in the waiting outcome files, join, assess; the run record's `performance` section."""

    whole = _whole_log()
    predictions = logged(version, whole)
    files = intake.intake(run_id, set(predictions[intake.ID]))
    known = intake.known()
    joined = join(predictions, known)
    versions = assess(joined, settings().decision_threshold)
    for name, found in versions.items():
        found["evaluation_auc"] = _evaluation_auc(int(name))
    batch = training_batches.write(joined, run_id)
    labelled = joined[OUTCOME].notna()
    return {
        "files": files,
        "quarantined": [f["name"] for f in files if f["status"] == "quarantined"],
        "labelled": int(labelled.sum()),
        "waiting": int((~known[intake.ID].isin(predictions[intake.ID])).sum()),
        "batch": batch,
        "versions": versions,
        "serving": judge(versions.get(str(version)), version),
        "rollouts": champion_vs_challenger(whole, known),
    }
