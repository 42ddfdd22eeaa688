"""The model report and the training summary: undefined metrics read "n/a", members sit beside the blend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tfx_modules import config
from tfx_modules.outcome import Outcome
from tfx_modules.report import write_model_report
from tfx_modules.train import summary

MEMBERS = {
    "members": {
        name: {"auc": auc, "binary_accuracy": 0.93, "log_loss": 0.18, "expected_calibration_error": 0.01}
        for name, auc in (("trees", 0.951), ("mlps", 0.942), ("blend", 0.953), ("calibrated", 0.953))
    },
    "blend": {"weight": 0.8, "slope": 1.1, "intercept": 0.2},
    "eval_examples": 5000,
}


@pytest.fixture
def outcome() -> Outcome:
    return Outcome(
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
    outcome: Outcome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDIT_RISK_HOME", str(tmp_path))
    page = write_model_report(outcome, config.settings()).read_text()
    assert "<tr><td>loan_grade=G</td><td>14</td><td>1</td><td>n/a</td>" in page
    assert "loan_grade=G n/a" in summary(outcome) and "loan_grade=A 0.940" in summary(outcome)
    twin = json.loads((tmp_path / "reports" / "model-7.json").read_text())
    assert twin["slices"]["loan_grade=G"]["auc"] is None


def test_the_report_shows_each_member_beside_the_blend_and_the_calibration_error(
    outcome: Outcome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDIT_RISK_HOME", str(tmp_path))
    page = write_model_report(outcome, config.settings()).read_text()
    for label, auc in (("gradient-boosted trees", "0.951"), ("MLPs", "0.942"), ("calibrated (served)", "0.953")):
        row = page[page.index(label) :]
        assert row[: row.index("</tr>")].count(auc) == 1, label
    assert "expected_calibration_error" in page and "0.008" in page
    assert "0.80 &times; trees + 0.20 &times; MLPs" in page
    assert "member trees: auc=0.9510" in summary(outcome)
