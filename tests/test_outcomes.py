"""Outcome intake and join on files: typed reading, the ledger, quarantine of bad and conflicting files, outcomes
that wait for their prediction, performance per version and vintage, and the training batch with its lineage.
Predictions are written to a real prediction log as the gateway writes them (testing/predictions.py: log_rows)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common import config
from common.features import LABEL
from data.generate import generate
from testing.predictions import log_rows
from tfx_modules.data_gate import dataset
from tfx_modules.data_gate.dataset import DataError

WEEK_47 = datetime(2026, 11, 18, 12, tzinfo=timezone.utc).timestamp()  # ISO week 2026-W47
WEEK_48 = datetime(2026, 11, 25, 12, tzinfo=timezone.utc).timestamp()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CREDIT_RISK_HOME", str(tmp_path))
    return tmp_path


def drop(home: Path, name: str, text: str) -> Path:
    path = config.settings().outcomes_dir / "incoming" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def predictions(home: Path, n: int, version: int, first: int = 0, at: float = WEEK_48, seed: int = 0) -> pd.DataFrame:
    """`n` logged predictions with ids `a<first>..`; their scores are the default probability of their outcome."""
    rng = np.random.default_rng(seed)
    frame = generate(n, seed=seed)
    scores = rng.uniform(0.02, 0.98, n)
    ids = [f"a{first + i}" for i in range(n)]
    log_rows(home, frame, scores, version, ids=ids, at=at)
    outcome = (rng.uniform(size=n) < scores).astype(int)
    return pd.DataFrame({"application_id": ids, LABEL: outcome, "probability": scores})


def outcome_csv(frame: pd.DataFrame) -> str:
    return frame[["application_id", LABEL]].to_csv(index=False)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty file"),
        ("application_id,loan_status\n", "no data rows"),
        ("id,status\na,1\n", "no header row"),
        ("application_id,observed_at\na,2026-01-01\n", "missing column: loan_status"),
        ("application_id,loan_status\na,1\nb,2\n", "the outcome must be 0 or 1, found line 3 ('2')"),
        ("application_id,loan_status\n,1\n", "no application id at line 2"),
        ("application_id,loan_status,observed_at\na,1,yesterday\n", "not an ISO date or time at line 2"),
        ("application_id,loan_status\na,1,x\n", "another number of fields"),
    ],
)
def test_a_file_that_cannot_be_read_says_why(home: Path, text: str, reason: str) -> None:
    from outcomes import intake as outcomes

    with pytest.raises(DataError) as err:
        outcomes.read(drop(home, "bad.csv", text))
    assert reason in err.value.reason


def test_a_good_file_is_typed(home: Path) -> None:
    from outcomes import intake as outcomes

    text = (
        "application_id,loan_status,observed_at,extra\n a1 ,1,2026-03-01,x\na2,0,,\na3,0,2026-03-02T10:00:00+01:00,y\n"
    )
    frame = outcomes.read(drop(home, "good.csv", text))
    assert frame.to_dict("list") == {
        "application_id": ["a1", "a2", "a3"],
        LABEL: [1, 0, 0],
        "observed_at": ["2026-03-01T00:00:00Z", "", "2026-03-02T09:00:00Z"],
    }
    assert frame[LABEL].dtype == "int64"


def test_intake_counts_files_once_and_quarantines_conflicts(home: Path) -> None:
    from common.records import batch_ledger, outcome_ledger
    from outcomes import join as outcome_join

    truth = predictions(home, 300, version=3)
    first = drop(home, "first.csv", outcome_csv(truth.iloc[:100]) + f"a0,{truth[LABEL].iloc[0]}\nlater-1,1\n")
    same = drop(home, "same-again.csv", first.read_text())
    record = outcome_join.update("run-1", 3)
    accepted, duplicate = record["files"]
    assert accepted["status"] == "accepted" and duplicate["status"] == "duplicate"
    assert (accepted["rows"], accepted["new"], accepted["repeats"], accepted["waiting"]) == (102, 101, 1, 1)
    assert not first.exists() and not same.exists()
    assert record["labelled"] == 100 and record["waiting"] == 1
    assert record["versions"]["3"]["labelled"] == 100 and record["versions"]["3"]["unlabelled"] == 200

    flipped = truth.iloc[50:60].assign(**{LABEL: 1 - truth[LABEL].iloc[50:60]})
    drop(home, "conflict.csv", outcome_csv(pd.concat([flipped, truth.iloc[100:150]])))
    drop(home, "within.csv", "application_id,loan_status\nx,1\nx,0\n")
    drop(home, "garbage.csv", "\0\1\2binary")
    record = outcome_join.update("run-2", 3)
    by_name = {f["name"]: f for f in record["files"]}
    assert {f["status"] for f in by_name.values()} == {"quarantined"}
    assert record["quarantined"] == ["conflict.csv", "within.csv", "garbage.csv"]
    assert by_name["conflict.csv"]["reason"].startswith("conflicting outcomes for 10 application(s)")
    assert by_name["within.csv"]["anomalies"] == {"x": "both 0 and 1 in this file"}
    app, status = truth["application_id"].iloc[50], truth[LABEL].iloc[50]
    assert by_name["conflict.csv"]["anomalies"][app] == f"{1 - status} here, {status} recorded before"
    assert len(by_name["conflict.csv"]["anomalies"]) == 10
    assert by_name["garbage.csv"]["reason"] == "binary content, not a CSV text file"
    kept = Path(by_name["conflict.csv"]["path"])
    assert kept.read_text() == outcome_csv(pd.concat([flipped, truth.iloc[100:150]]))  # untouched, nothing deleted
    report_json, report_md = batch_ledger.quarantine_reports(kept)
    assert json.loads(report_json.read_text())["reason"] == by_name["conflict.csv"]["reason"]
    assert "conflicting outcomes" in report_md.read_text()
    assert record["labelled"] == 100  # nothing from the quarantined files joined
    assert (
        sorted(e["status"] for e in batch_ledger.ledger(outcome_ledger.book()).values())
        == ["accepted"] + ["quarantined"] * 3
    )


def test_outcomes_before_their_predictions_wait_and_join_later(home: Path) -> None:
    from outcomes import join as outcome_join

    early = pd.DataFrame({"application_id": ["b0", "b1", "b2"], LABEL: [1, 0, 0]})
    drop(home, "early.csv", outcome_csv(early))
    record = outcome_join.update("before", None)
    assert record["files"][0]["waiting"] == 3 and record["labelled"] == 0 and record["serving"]["line"] == ""
    predictions(home, 3, version=1, first=0, seed=1)  # a0..a2: not these ids
    log_rows(home, generate(3, seed=2), np.array([0.9, 0.2, 0.1]), 1, ids=["b0", "b1", "b2"], at=WEEK_48)
    record = outcome_join.update("after", 1)
    assert record["files"] == [] and record["labelled"] == 3 and record["waiting"] == 0
    assert record["serving"]["line"] == "; realized auc=1.000 (3 labelled, version 1)"


def test_performance_per_version_and_vintage_and_the_estimate_before_outcomes(home: Path) -> None:
    from outcomes import join as outcome_join
    from outcomes import performance

    old = predictions(home, 2000, version=1, at=WEEK_47, seed=3)
    new = predictions(home, 3000, version=2, first=5000, at=WEEK_48, seed=4)
    before = outcome_join.update("estimate", 2)
    estimated = before["versions"]["2"]["estimated"]["auc"]
    assert before["serving"]["line"] == f"; estimated auc={estimated:.3f} (version 2)"
    drop(home, "old.csv", outcome_csv(old))
    drop(home, "new.csv", outcome_csv(new.iloc[:1500]))
    record = outcome_join.update("realized", 2)
    v1, v2 = record["versions"]["1"], record["versions"]["2"]
    assert list(v1["vintages"]) == ["2026-W47"] and list(v2["vintages"]) == ["2026-W48"]
    assert (v2["labelled"], v2["unlabelled"]) == (1500, 1500)
    expected = performance.realized(
        new["probability"].to_numpy()[:1500], (new["probability"] >= 0.5).to_numpy()[:1500], new[LABEL][:1500]
    )
    assert v2["realized"]["auc"] == pytest.approx(expected["auc"], abs=1e-9)
    assert record["serving"]["line"] == f"; realized auc={expected['auc']:.3f} (1500 labelled, version 2)"
    assert abs(estimated - v2["realized"]["auc"]) < 0.03  # these scores are calibrated by construction


def test_decay_against_the_floor_and_the_evaluation_auc(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from common.records import batch_ledger
    from outcomes import join as outcome_join

    batch_ledger.save_json(
        batch_ledger.settings().state_dir / "lineage.json", {"models": [{"version": 4, "metrics": {"auc": 0.95}}]}
    )
    found = {"labelled": 500, "realized": {"auc": 0.86}, "estimated": None}
    verdict = outcome_join.judge(found, 4)
    assert verdict["decay"] == "realized AUC 0.860 of version 4 is below its evaluation AUC 0.950 - 0.050"
    monkeypatch.setenv("CREDIT_RISK_MIN_LABELLED", "501")
    assert outcome_join.judge(found, 4)["decay"] is None  # too few outcomes to judge
    estimate = {"labelled": 0, "realized": None, "estimated": {"auc": 0.7}}
    assert outcome_join.judge(estimate, 4)["decay"] is None
    monkeypatch.setenv("CREDIT_RISK_DECAY_ON_ESTIMATE", "true")
    assert outcome_join.judge(estimate, 4)["decay"].startswith("estimated AUC 0.700 of version 4 is below the blessing")


def test_joined_outcomes_become_an_incoming_batch_with_lineage(home: Path) -> None:
    from common.records import batch_ledger
    from outcomes import join as outcome_join
    from outcomes import training_batches as outcome_batches
    from tfx_modules.data_gate import intake

    truth = predictions(home, 400, version=5)
    drop(home, "o.csv", outcome_csv(truth.iloc[:250]))
    batch = outcome_join.update("to-batch", 5)["batch"]
    assert (batch["rows"], batch["skipped"], batch["versions"]) == (250, 0, {"5": 250})
    path = config.settings().incoming_dir / batch["name"]
    frame = dataset.read_batch(path)
    assert frame[LABEL].tolist() == truth[LABEL].iloc[:250].tolist()
    assert outcome_join.update("nothing-new", 5)["batch"] is None  # each prediction goes into one batch
    (taken,) = intake.intake("retrain-intake", None, None)["batches"]
    assert taken["status"] == "accepted" and taken["sha256"] == batch["sha256"]
    history = batch_ledger.lineage()
    history["models"].append({"version": 6, "batches": [taken["sha256"]]})
    batch_ledger.save_json(batch_ledger.settings().state_dir / "lineage.json", history)
    assert outcome_batches.fed(6) == truth["application_id"].iloc[:250].tolist()
    assert outcome_batches.fed(5) == []
