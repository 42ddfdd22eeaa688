"""The monitoring DAG's gauges all have a mapping to labelled Prometheus series; its alerts name each drifted
feature with its measures and thresholds, the performance decay and each quarantined outcome file; the report's
performance section shows what the run found."""

from __future__ import annotations

from pathlib import Path

from common.config import PROJECT_ROOT
from dags.alerts import monitoring_texts as alerts
from dags.metrics import monitoring as metrics
from monitoring.statsd_mapper import Mapper
from testing.harness import live_record, performance_record


def test_every_live_gauge_maps_to_a_labelled_series() -> None:
    mapper = Mapper.from_file(PROJECT_ROOT / "monitoring" / "statsd_mapping.yml")
    sent = metrics.gauges(live_record("person_income"))
    mapped = {name: mapper.map(f"credit_risk.{name}", "gauge") for name in sent}
    unmapped = [name for name, m in mapped.items() if m.rule is None]
    assert unmapped == []
    drift = mapped["live.distance.jensen_shannon.person_income"]
    assert (drift.name, drift.labels) == (
        "credit_risk_live_drift",
        {"measure": "jensen_shannon", "feature": "person_income"},
    )
    share = mapped["live.training_share.loan_intent.VENTURE"]
    assert (share.name, share.labels) == (
        "credit_risk_training_category_share",
        {"feature": "loan_intent", "category": "VENTURE"},
    )
    assert sent["live.verdict"] == 1 and sent["live.version"] == 7


def test_the_alert_names_the_drifted_feature_with_its_measures() -> None:
    lines = alerts.drift_lines(live_record("loan_grade"))
    assert lines[0] == ("loan_grade: l_infinity 0.3000 (threshold 0.1000), CSI 0.4000 significant (threshold 0.2500)")
    assert lines[1:] == ["window: 600 predictions of model version 7", "report: /r.html"]


def test_every_performance_gauge_maps_to_a_labelled_series() -> None:
    mapper = Mapper.from_file(PROJECT_ROOT / "monitoring" / "statsd_mapping.yml")
    sent = metrics.gauges(live_record("person_income"))
    mapped = {name: mapper.map(f"credit_risk.{name}", "gauge") for name in sent}
    assert [name for name, m in mapped.items() if m.rule is None] == []
    auc = mapped["performance.realized.auc.7"]
    assert (auc.name, auc.labels) == ("credit_risk_realized_performance", {"metric": "auc", "version": "7"})
    labelled = mapped["performance.labelled.7"]
    assert (labelled.name, labelled.labels) == (
        "credit_risk_outcome_predictions",
        {"state": "labelled", "version": "7"},
    )
    assert mapped["performance.estimated.auc.7"].name == "credit_risk_estimated_performance"
    assert sent["performance.decay"] == 0 and sent["outcomes.quarantined"] == 1 and sent["outcomes.waiting"] == 3
    assert {name.split(".")[2] for name in sent if name.startswith("performance.realized.")} == set(metrics.REALIZED)


def test_decay_and_quarantined_outcome_files_alert_with_their_reasons() -> None:
    record = {"report": "/r.html", "performance": performance_record("realized AUC 0.700 of version 7 is below x")}
    (decay, decay_lines), (file, file_lines) = alerts.performance_alerts(record)
    assert decay == "performance decay: model version 7"
    assert decay_lines == [
        "realized AUC 0.700 of version 7 is below x",
        "200 predictions with outcomes",
        "report: /r.html",
    ]
    assert file == "outcome file o.csv quarantined"
    assert file_lines == ["reason: empty file", "kept at: /q/o.csv", "report: /r.html"]
    assert (
        alerts.performance_alerts({"report": "/r.html", "performance": {**performance_record(None), "files": []}}) == []
    )


def test_the_report_shows_files_versions_vintages_and_deciles(tmp_path: Path) -> None:
    from outcomes import report as performance_report

    page = performance_report.section(performance_record("realized AUC 0.700 of version 7 is below x"))
    assert "Decay: realized AUC 0.700" in page and "o.csv" in page and "empty file" in page
    assert (
        "2026-W48" in page and page.count("<tr>") == 2 + 2 + 2 + 11
    )  # header and rows: files, versions, vintages, deciles
