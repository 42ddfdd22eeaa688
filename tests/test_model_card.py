"""The model card of a pushed version: every section present, its numbers the model report's, the deployment record
from a real deploy, and `serving.deploy status` listing it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from common import features
from common.config import settings
from common.metric_format import figure
from serving import deploy, process
from tests.conftest import TRAIN_ROWS
from tfx_modules.reporting import model_card
from tfx_modules.reporting.model_report import write_model_report

pytestmark = pytest.mark.slow  # the trained_home fixture runs the TFX pipeline


@pytest.fixture
def card(trained_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, str, dict, int]:
    """A copy of the trained home, its version deployed to a real local server, then its card written."""
    home = tmp_path / "home"
    shutil.copytree(trained_home, home)
    monkeypatch.setenv("CREDIT_RISK_HOME", str(home))
    s = settings()
    (version,) = (int(p.name) for p in s.model_dir.iterdir())
    s.serving_dir.mkdir(parents=True)
    with process.local_server(s.serving_dir, "--poll-seconds", "0.2") as url:
        monkeypatch.setenv("CREDIT_RISK_SERVING_URL", url)
        assert deploy.redeploy(backend="local", timeout=120)["status"] == "deployed"
    path = Path(model_card.write(version, settings()))
    report = json.loads(s.model_report(version).with_suffix(".json").read_text())
    return json.loads(path.with_suffix(".json").read_text()), path.read_text(), report, version


def test_every_section_is_present_in_both_forms(card) -> None:
    doc, page, _, version = card
    assert list(doc) == list(model_card.SECTIONS)
    assert re.findall(r'<h2 id="(\w+)">', page) == list(model_card.SECTIONS)
    assert doc["model"]["version"] == version
    assert doc["intended_use"]["out_of_scope"] and doc["limitations"]
    assert any("recording artifact" in limitation for limitation in doc["limitations"])


def test_the_numbers_are_the_model_reports(card) -> None:
    doc, page, report, _ = card
    assert doc["evaluation"]["overall"] == report["metrics"]
    assert doc["evaluation"]["slices"] == report["slices"]
    assert doc["evaluation"]["members"] == report["members"]["members"]
    assert doc["calibration"]["expected_calibration_error"] == report["metrics"]["expected_calibration_error"]
    assert doc["calibration"]["platt_scaling"] == report["members"]["calibration"]
    assert doc["fairness"] == report["fairness"] and doc["fairness"]["groups"]["age_band"]
    # The HTML shows the same figures as the report's HTML.
    report_page = Path(doc["model"]["report"]).read_text()
    for value in (report["metrics"]["auc"], report["metrics"]["binary_accuracy"]):
        assert figure(value, ".4g") in page and figure(value, ".4g") in report_page


def test_training_data_lineage_reasons_and_deployment(card) -> None:
    doc, _, _, version = card
    data = doc["training_data"]
    assert data["rows"] == TRAIN_ROWS and len(data["batches"]) == 1
    assert re.fullmatch(r"[0-9a-f]{64}", data["batches"][0]["sha256"]) and data["date_range"]
    produced = {(p["component"], p["artifact"]) for p in data["lineage"]}
    assert {("CsvExampleGen", "Examples"), ("Trainer", "Model"), ("FairnessGate", "ModelBlessing")} <= produced
    assert ("Pusher", "PushedModel") in produced
    assert [i["name"] for i in doc["features"]["inputs"]] == list(features.FEATURE_NAMES)
    assert doc["reasons"]["baseline_applicant"] == features.BASELINE
    assert doc["reasons"]["table"]["loan_percent_income"]["high"] == features.REASONS["loan_percent_income"].high
    deployment = doc["deployment"]
    assert deployment["live_now"] and deployment["went_live"] and deployment["replaced"] is None
    assert deploy.status(settings())["model_cards"] == {str(version): str(settings().model_card(version))}


def test_the_report_is_rewritten_unchanged_by_the_card(card) -> None:
    """The card reads the report's JSON twin; writing the report again from ML Metadata gives the same numbers."""
    from tfx_modules.reporting.run_result import read_run_result

    doc, _, report, _ = card
    outcome = read_run_result(settings(), doc["model"]["pipeline_run"])
    write_model_report(outcome, settings())
    assert json.loads(settings().model_report(doc["model"]["version"]).with_suffix(".json").read_text()) == report
