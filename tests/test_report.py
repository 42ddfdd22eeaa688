"""The model report and the training summary: undefined metrics read "n/a", the trees sit beside their calibration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common import config
from tfx_modules.reporting.model_report import write_model_report
from tfx_modules.reporting.run_result import RunResult, defined_metrics
from tfx_modules.train import summary

MEMBERS = {
    "members": {
        name: {"auc": auc, "binary_accuracy": 0.93, "log_loss": 0.18, "expected_calibration_error": 0.01}
        for name, auc in (("trees", 0.951), ("calibrated", 0.951))
    },
    "calibration": {"slope": 1.1, "upper_slope": -0.3, "intercept": 0.2},
    "tree_models": [612],
    "eval_examples": 5000,
}


@pytest.fixture
def outcome() -> RunResult:
    return RunResult(
        run_id="run-1",
        blessed=True,
        version=7,
        model_path="/models/7",
        metrics={"auc": 0.953, "binary_accuracy": 0.94, "expected_calibration_error": 0.008},
        slices={
            "loan_grade=A": {"example_count": 1700.0, "mean_label": 0.1, "auc": 0.94},
            "loan_grade=G": {"example_count": 14.0, "mean_label": 1.0, "auc": None},
        },
        members=MEMBERS,
    )


def test_an_undefined_slice_auc_reads_na_in_the_report_and_the_summary(
    outcome: RunResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDIT_RISK_HOME", str(tmp_path))
    page = write_model_report(outcome, config.settings()).read_text()
    assert "<tr><td>loan_grade=G</td><td>14</td><td>1</td><td>n/a</td>" in page
    assert "loan_grade=G n/a" in summary(outcome) and "loan_grade=A 0.940" in summary(outcome)
    twin = json.loads((tmp_path / "reports" / "model-7.json").read_text())
    assert twin["slices"]["loan_grade=G"]["auc"] is None


def test_nan_and_one_class_metrics_are_undefined_and_json_carries_them() -> None:
    """TFMA writes NaN precision for a slice with no predicted positive; Airflow's XCom refuses NaN (a real run's
    read_blessing failed on loan_grade=G), so it becomes None, as a one-class slice's AUC does."""
    few = defined_metrics({"example_count": 23.0, "mean_label": 0.2, "precision": float("nan"), "auc": 0.8})
    one_class = defined_metrics({"example_count": 9.0, "mean_label": 1.0, "auc": 0.0, "precision": 1.0})
    assert few == {"example_count": 23.0, "mean_label": 0.2, "precision": None, "auc": 0.8}
    assert one_class == {"example_count": 9.0, "mean_label": 1.0, "auc": None, "precision": 1.0}
    json.dumps([few, one_class], allow_nan=False)


def test_the_report_shows_the_trees_beside_their_calibration_and_its_error(
    outcome: RunResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDIT_RISK_HOME", str(tmp_path))
    page = write_model_report(outcome, config.settings()).read_text()
    for label in ("gradient-boosted trees", "calibrated (served)"):
        row = page[page.index(label) :]
        assert row[: row.index("</tr>")].count("0.951") == 1, label
    assert "expected_calibration_error" in page and "0.008" in page
    assert "probability = sigmoid(1.100 &times; logit -0.300 &times; max(logit, 0) +0.200)" in page
    assert "member trees: auc=0.9510" in summary(outcome)


def test_the_report_has_the_fairness_table_and_names_the_group_over_a_limit(
    outcome: RunResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    from tfx_modules.evaluation import fairness

    monkeypatch.setenv("CREDIT_RISK_HOME", str(tmp_path))
    labels = np.array([1, 0, 1, 0, 1, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.1, 0.3, 0.1])
    bands = np.array(["<25", "<25", "<25", "<25", "50+", "50+", "50+", "50+"])
    table = fairness.table(labels, scores, {"age_band": bands}, threshold=0.5, min_count=1)
    limits = {"age_band": {fairness.DEMOGRAPHIC_PARITY: 0.15}}
    (violation,) = fairness.violations(table, "age_band", limits["age_band"])
    outcome.fairness = {**table.to_dict(), "limits": limits, "violations": [{"detail": violation.detail}]}
    page = write_model_report(outcome, config.settings()).read_text()
    assert "<tr><td>&lt;25</td><td>4</td><td>2</td><td>0.75</td><td>1</td><td>1</td><td>1</td></tr>" in page
    assert "demographic_parity_difference 1.000 (&lt;25 vs 50+, positive_rate) limit 0.150" in page
    assert "0.850 over the limit 0.150: group &lt;25 against group 50+" in page
    assert "fairness age_band: demographic_parity_difference=1.0000" in summary(outcome)
