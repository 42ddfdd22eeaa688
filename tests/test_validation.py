"""The validation and drift gate without Airflow: TFDV anomalies, drift measures, and the batch bookkeeping."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from common import config, features
from common.records import batch_ledger
from data.generate import generate
from tfx_modules.data_gate import dataset, intake, validation


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CREDIT_RISK_HOME", str(tmp_path))
    monkeypatch.delenv("CREDIT_RISK_DRIFT_THRESHOLDS", raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def baseline():
    return generate(4000, seed=1)


def _drifted(df, baseline) -> set[str]:
    measured = validation.drift(
        validation.drift_statistics(df), validation.drift_statistics(baseline), intake.thresholds(None)
    )
    return {name for name, d in measured.items() if d["drifted"]}


def test_resample_does_not_drift(baseline) -> None:
    assert _drifted(generate(2000, seed=2), baseline) == set()


def test_numeric_shift_drifts_that_feature(baseline) -> None:
    assert _drifted(generate(2000, seed=2, shift={"loan_int_rate": 1.3}), baseline) == {"loan_int_rate"}


def test_category_mix_drifts_that_feature(baseline) -> None:
    assert _drifted(generate(2000, seed=2, category_mix={"loan_intent": {"VENTURE": 0.6}}), baseline) == {"loan_intent"}


@pytest.mark.parametrize(
    ("change", "column", "words"),
    [
        (lambda d: d.assign(loan_grade=d.loan_grade.where(d.index % 7 > 0, "Z")), "loan_grade", "missing from"),
        (lambda d: d.assign(person_age=d.person_age.where(d.index % 9 > 0, 400)), "person_age", "large"),
        (lambda d: d.assign(loan_percent_income=-d.loan_percent_income), "loan_percent_income", "low"),
    ],
)
def test_spec_violations_are_anomalies_whatever_the_reference(baseline, change, column, words) -> None:
    expected = validation.schema(validation.statistics(baseline))
    found = validation.anomalies(validation.statistics(change(generate(500, seed=3))), expected)
    assert list(found) == [column]
    assert words in found[column].lower()


def test_clean_batch_has_no_anomaly(baseline) -> None:
    expected = validation.schema(validation.statistics(baseline))
    assert validation.anomalies(validation.statistics(generate(500, seed=4)), expected) == {}


def test_intake_files_good_bad_and_duplicate_batches(home: Path) -> None:
    incoming = home / "incoming"
    incoming.mkdir()
    good = dataset.write_canonical(generate(300, seed=5), incoming / "good.csv")
    (incoming / "again.csv").write_bytes(good.read_bytes())
    (incoming / "empty.csv").write_bytes(b"")
    generate(300, seed=6).assign(loan_grade="Q").to_csv(incoming / "unseen.csv", index=False)
    generate(300, seed=7).drop(columns=["loan_amnt"]).to_csv(incoming / "nocol.csv", index=False)

    record = intake.intake("run_1", None, None)

    by_name = {b["name"]: b for b in record["batches"]}
    assert {n: b["status"] for n, b in by_name.items()} == {
        "good.csv": "accepted",
        "again.csv": "duplicate",
        "empty.csv": "quarantined",
        "unseen.csv": "quarantined",
        "nocol.csv": "quarantined",
    }
    assert "empty" in by_name["empty.csv"]["reason"]
    assert "loan_amnt" in by_name["nocol.csv"]["reason"]
    assert "loan_grade" in by_name["unseen.csv"]["anomalies"]
    assert list(incoming.iterdir()) == []
    for name in ("empty.csv", "unseen.csv", "nocol.csv"):
        kept = Path(by_name[name]["path"])
        report = json.loads(kept.with_name(kept.name + ".report.json").read_text())
        assert kept.is_file() and report["reason"] == by_name[name]["reason"]
        assert by_name[name]["reason"] in kept.with_name(kept.name + ".report.md").read_text()
    assert len(dataset.read_batch(by_name["good.csv"]["path"])) == 300
    assert Path(record["report"]).read_text().count("<h2>") == 5
    assert intake.intake("run_1", None, None)["batches"] == record["batches"]  # a rerun adds nothing


def test_lineage_baseline_drives_the_next_drift_check(home: Path) -> None:
    incoming = home / "incoming"
    dataset.write_canonical(generate(2000, seed=8), incoming / "first.csv")
    intake.intake("run_1", None, None)
    folder = batch_ledger.training_folder("run_1")
    intake.record_model("run_1", {"version": 7, "metrics": {"auc": 0.9}}, folder["batches"])
    dataset.write_canonical(generate(1000, seed=9, shift={"person_income": 2.0}), incoming / "rich.csv")

    record = intake.intake("run_2", "rich.csv", {"loan_amnt": 0.5})

    drift = record["batches"][0]["drift"]
    assert record["serving_version"] == 7
    assert drift["person_income"]["drifted"] and drift["loan_amnt"]["threshold"] == 0.5
    assert {f for f, d in drift.items() if d["drifted"]} <= {"person_income", "loan_percent_income"}
    assert batch_ledger.serving_model()["batches"] == folder["batches"]


def test_unknown_batch_or_threshold_is_a_clear_error(home: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        batch_ledger.pending("nope.csv")
    with pytest.raises(ValueError, match="unknown features"):
        intake.thresholds({"no_such_feature": 0.1})
    assert set(intake.thresholds({"loan_grade": 0.2})) == set(features.FEATURE_NAMES)


def test_pending_order_is_arrival_then_name_at_nanosecond_resolution(home: Path) -> None:
    """Two batches 1 ns apart are taken in that order (a float mtime cannot tell them apart and fell back to the
    name); equal mtimes fall back to the name, the same order on every call."""
    incoming = config.settings().incoming_dir
    incoming.mkdir(parents=True, exist_ok=True)
    stamp = 1_795_000_000_000_000_000
    for name, nanoseconds in (("a.csv", stamp + 1), ("b.csv", stamp), ("c.csv", stamp + 1), ("d.csv", stamp)):
        (incoming / name).write_text("x\n")
        os.utime(incoming / name, ns=(nanoseconds, nanoseconds))
    assert [p.name for p in batch_ledger.pending()] == ["b.csv", "d.csv", "a.csv", "c.csv"]
