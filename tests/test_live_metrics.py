"""The monitoring DAG's gauges all have a mapping to labelled Prometheus series, and its alert names each drifted
feature with its measures and thresholds."""

from __future__ import annotations

from dags.live_monitoring import alerts, metrics
from monitoring.statsd_mapper import Mapper
from tfx_modules import features
from tfx_modules.config import PROJECT_ROOT


def record(drifted: str) -> dict:
    found = {}
    for f in features.FEATURES:
        summary = (
            {"live_shares": dict.fromkeys(f.vocabulary, 0.1), "training_shares": dict.fromkeys(f.vocabulary, 0.1)}
            if f.categorical
            else {"live_mean": 1.0, "training_mean": 1.0}
        )
        found[f.name] = {
            "measure": "l_infinity" if f.categorical else "jensen_shannon",
            "value": 0.3 if f.name == drifted else 0.01,
            "threshold": 0.1,
            "base_threshold": 0.1,
            "csi": 0.4 if f.name == drifted else 0.01,
            "csi_band": "significant" if f.name == drifted else "stable",
            "csi_threshold": 0.25,
            "drifted": f.name == drifted,
            **summary,
        }
    score = {"psi": 0.02, "band": "stable", "threshold": 0.25, "drifted": False, "live_mean": 0.2, "eval_mean": 0.2}
    return {
        "predictions": 600,
        "version": 7,
        "verdict": "drift",
        "report": "/r.html",
        "result": {"features": found, "score": score},
    }


def test_every_live_gauge_maps_to_a_labelled_series() -> None:
    mapper = Mapper.from_file(PROJECT_ROOT / "monitoring" / "statsd_mapping.yml")
    sent = metrics.gauges(record("person_income"))
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
    lines = alerts.drift_lines(record("loan_grade"))
    assert lines[0] == ("loan_grade: l_infinity 0.3000 (threshold 0.1000), CSI 0.4000 significant (threshold 0.2500)")
    assert lines[1:] == ["window: 600 predictions of model version 7", "report: /r.html"]
