"""The monitoring DAG's gauges all have a mapping to labelled Prometheus series, and its alert names each drifted
feature with its measures and thresholds."""

from __future__ import annotations

from dags.live_monitoring import alerts, metrics
from monitoring.statsd_mapper import Mapper
from monitoring.testing import live_record
from tfx_modules.config import PROJECT_ROOT


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
