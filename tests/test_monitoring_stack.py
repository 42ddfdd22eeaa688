"""The local monitoring stack, live: StatsD packets -> bridge -> Prometheus -> dashboards' queries return data, and
an alert rule fires -> Alertmanager -> a Slack-style webhook sink and an SMTP sink on 127.0.0.1 receive it."""

from __future__ import annotations

import email
import html
import json
import re
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email import policy
from pathlib import Path

import pytest

from common.config import settings
from dags.metrics import monitoring as live_metrics
from monitoring import dashboard_page, local_stack
from monitoring.grafana_dashboards import DAG_ID as DAG
from monitoring.grafana_dashboards import LIVE, RETRAINING, SERVING
from testing.harness import (
    alert_sinks,
    assert_panels_return_data,
    dashboard,
    free_port,
    get_json,
    live_record,
    query,
    running_stack,
    send_statsd,
    wait_for,
)

# What one retraining run sends: a scheduler's metrics (dags test sends the ti.* and dag.* ones only) and the DAG's.
RUN_PACKETS = [
    "airflow.scheduler_heartbeat:1|c",
    "airflow.dag_processor_heartbeat:1|c",
    f"airflow.ti.start.{DAG}.intake:1|c",
    f"airflow.ti.finish.{DAG}.intake.success:1|c",
    f"airflow.dag.{DAG}.intake.duration:3200|ms",
    f"airflow.ti.finish.{DAG}.retrain__Trainer.success:1|c",
    f"airflow.dag.{DAG}.retrain__Trainer.duration:56000|ms",
    f"airflow.ti.finish.{DAG}.notify.failed:1|c",
    f"airflow.dagrun.duration.success.{DAG}:201000|ms",
    f"airflow.dagrun.duration.failed.{DAG}:15000|ms",
    "credit_risk.drift.person_income:0.21|g",
    "credit_risk.drift_threshold.person_income:0.1|g",
    "credit_risk.drift.loan_intent:0.01|g",
    "credit_risk.drift_threshold.loan_intent:0.05|g",
    "credit_risk.drift_gate.retrain:1|c",
    "credit_risk.drift_gate.skip:1|c",
    "credit_risk.model.auc:0.91|g",
    "credit_risk.model.accuracy:0.89|g",
    "credit_risk.model.version:2|g",
    f"credit_risk.model.pushed_timestamp:{int(time.time())}|g",
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with alert_sinks() as (slack, mail, smtp_port):
        alerting = {
            "ALERT_SMTP_SMARTHOST": f"127.0.0.1:{smtp_port}",
            "ALERT_SLACK_WEBHOOK_URL": slack.url,
            "ALERT_GROUP_WAIT": "1s",
            "ALERT_GROUP_INTERVAL": "1s",
        }
        serving_down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        with running_stack(tmp_path_factory.mktemp("home"), serving_down, alerting) as urls:
            yield {**urls, "slack": slack, "mail": mail}


def test_stack_scrapes_every_target(stack: dict):
    def scraped() -> dict:
        """Job -> health once every target has been scraped, else {}."""
        targets = get_json(f"{stack['prometheus']}/api/v1/targets")["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets if t["health"] != "unknown"}
        return health if len(health) == 5 else {}

    health = wait_for(scraped, 20, "every target scraped once")
    expected = {"serving": "down", "gateway": "down", "statsd": "up", "prometheus": "up", "alertmanager": "up"}
    assert health == expected  # nothing serves on the test's serving URL: both of its jobs are down


def test_start_is_idempotent(stack: dict):
    before = local_stack.status()
    assert local_stack.start(scrape_interval="1s") == {k: v for k, v in stack.items() if k in local_stack.SERVICES}
    assert local_stack.status() == before


def test_every_retraining_panel_returns_data(stack: dict):
    send_statsd(stack["statsd_port"], RUN_PACKETS)
    time.sleep(2.5)  # two scrapes, so rate() has two samples
    send_statsd(stack["statsd_port"], ["airflow.scheduler_heartbeat:1|c"])
    assert_panels_return_data(stack["prometheus"], dashboard("retraining"))
    (income,) = query(stack["prometheus"], 'credit_risk_drift{feature="person_income"}')
    assert float(income["value"][1]) == 0.21


def test_printed_prometheus_pages_answer(stack: dict):
    """Debian's Prometheus serves only its classic UI (`/alerts` is a 404 there): the URLs printed must work."""
    pages = local_stack.prometheus_pages(stack["prometheus"])
    assert set(pages) == {"alerts", "targets", "graph"}
    for page, marker in (("alerts", "ServingDown"), ("targets", "statsd"), ("graph", "Prometheus")):
        with urllib.request.urlopen(pages[page], timeout=5) as response:
            assert response.status == 200 and marker in response.read().decode(), pages[page]


def test_dashboard_pages_draw_every_panel_from_prometheus(stack: dict, tmp_path: Path):
    send_statsd(stack["statsd_port"], RUN_PACKETS)
    time.sleep(2.5)  # two scrapes, so rate() has two samples
    send_statsd(stack["statsd_port"], ["airflow.scheduler_heartbeat:1|c"])
    assert_panels_return_data(stack["prometheus"], dashboard("retraining"))  # scraped: now the pages can show it

    pages = dashboard_page.write_pages(stack["prometheus"], tmp_path, window=600)

    retraining, serving = (pages[name].read_text() for name in ("retraining", "serving"))
    assert [html.unescape(t) for t in re.findall(r"<h2>(.*?)</h2>", retraining)] == [p.title for p in RETRAINING]
    assert "no data" not in retraining  # every retraining panel has data after a run's packets
    assert retraining.count('class="mark"') >= 4 and "person_income threshold" in retraining  # points or lines
    assert int(re.search(r"<b>(\d+)</b> failed", retraining)[1]) >= 1  # a stat panel's last value
    # The model server is down in this stack: its up-gauge draws 0, its request panels have nothing to show.
    assert [html.unescape(t) for t in re.findall(r"<h2>(.*?)</h2>", serving)] == [p.title for p in SERVING]
    assert re.search(r"<b>0</b> 127\.0\.0\.1:\d+", serving) and serving.count("no data") == 3


def test_the_live_dashboard_page_draws_a_monitoring_run(stack: dict, tmp_path: Path):
    """The monitoring DAG's gauges of one run, scraped, fill every live panel but the two the gateway feeds (it is
    not in this stack)."""
    sent = live_metrics.gauges(live_record("person_income"))
    send_statsd(stack["statsd_port"], [f"credit_risk.{name}:{value}|g" for name, value in sent.items()])
    wait_for(lambda: query(stack["prometheus"], "credit_risk_live_verdict"), timeout=10, what="the live gauges scraped")

    live = dashboard_page.write_pages(stack["prometheus"], tmp_path, window=600)["live"].read_text()

    assert [html.unescape(t) for t in re.findall(r"<h2>(.*?)</h2>", live)] == [p.title for p in LIVE]
    assert live.count("no data") == 2 and "person_income" in live


def test_drift_alert_reaches_slack_and_email(stack: dict):
    send_statsd(stack["statsd_port"], RUN_PACKETS)
    slack, mail = stack["slack"], stack["mail"]

    def drift_in(texts: list[str]) -> bool:
        return any(names("DriftDetected", t) and "person_income" in t for t in texts)

    wait_for(lambda: drift_in(slack.texts()), 45, "the drift alert on the Slack webhook")
    wait_for(lambda: drift_in(mail.messages), 45, "the drift alert by email")
    alerts = get_json(f"{stack['alertmanager']}/api/v2/alerts")
    assert {a["labels"]["feature"] for a in alerts if a["labels"]["alertname"] == "DriftDetected"} == {"person_income"}


def slack_messages(stack: dict, alertname: str) -> list[dict]:
    """The Slack attachments (title, text) Alertmanager posted for one alert name."""
    bodies = [a for body in stack["slack"].received for a in body.get("attachments", [])]
    return [a for a in bodies if a.get("title", "").endswith(f": {alertname}")]


def names(alertname: str, text: str) -> bool:
    """`text` names the alert as a whole word: "DriftDetected" is also the tail of "LiveDriftDetected", which other
    tests of the stack fire."""
    return re.search(rf"\b{alertname}\b", text) is not None


def mail_texts(stack: dict, alertname: str) -> list[str]:
    """The text of each email Alertmanager sent for one alert name (its HTML, tags dropped, entities decoded)."""
    messages = (email.message_from_string(m, policy=policy.default) for m in stack["mail"].messages)
    bodies = [html.unescape(re.sub(r"<[^>]+>", " ", m.get_body(("html", "plain")).get_content())) for m in messages]
    return [" ".join(b.split()) for b in bodies if names(alertname, b)]


def test_the_alert_text_delivered_is_the_rules_summary_and_description(stack: dict):
    """What the team reads: the rule's annotations rendered with the firing series' values, in Slack and by mail."""
    send_statsd(stack["statsd_port"], RUN_PACKETS)
    summary = "Data drift on person_income: 0.210"
    description = "The newest batch drifted past its threshold on person_income; the DAG retrains."

    (posted, *_) = wait_for(lambda: slack_messages(stack, "DriftDetected"), 45, "DriftDetected on the Slack webhook")
    assert posted["title"] == "FIRING: DriftDetected"
    assert posted["text"] == f"{summary}: {description}\n"
    (mailed, *_) = wait_for(lambda: mail_texts(stack, "DriftDetected"), 45, "DriftDetected by email")
    assert f"summary = {summary}" in mailed and f"description = {description}" in mailed


def post_alerts(alertmanager: str, alerts: list[dict]) -> None:
    """Alerts as Prometheus sends them: POST /api/v2/alerts, firing for the next ten minutes."""
    now = datetime.now(timezone.utc)
    span = {"startsAt": now.isoformat(), "endsAt": (now + timedelta(minutes=10)).isoformat()}
    body = json.dumps([{**alert, **span} for alert in alerts]).encode()
    request = urllib.request.Request(
        f"{alertmanager}/api/v2/alerts", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def test_serving_down_inhibits_its_error_and_latency_alerts(stack: dict):
    """alertmanager.yml's inhibit rule, run by the real Alertmanager: while ServingDown fires, the error-ratio and
    latency alerts are suppressed (never delivered); ServingDown itself is delivered."""
    model = {"model_name": "credit_risk", "severity": "critical"}
    down = {"job": "serving", "instance": "model-blue:8501", "severity": "critical"}
    post_alerts(
        stack["alertmanager"],
        [
            {"labels": {"alertname": "ServingDown", **down}, "annotations": {"summary": "model-blue:8501 is down"}},
            {"labels": {"alertname": "ServingErrorRatioHigh", **model}, "annotations": {"summary": "errors"}},
            {"labels": {"alertname": "ServingLatencyP99High", **model}, "annotations": {"summary": "slow"}},
        ],
    )
    wait_for(lambda: slack_messages(stack, "ServingDown"), 30, "ServingDown on the Slack webhook")
    wait_for(lambda: mail_texts(stack, "ServingDown"), 30, "ServingDown by email")
    time.sleep(3)  # three group intervals: an alert that is not inhibited would have been sent by now

    alerts = get_json(f"{stack['alertmanager']}/api/v2/alerts")
    by_name = {a["labels"]["alertname"]: a for a in alerts if a["labels"].get("instance") != "model-blue:8501"}
    down_prints = {a["fingerprint"] for a in alerts if a["labels"]["alertname"] == "ServingDown"}
    for name in ("ServingErrorRatioHigh", "ServingLatencyP99High"):
        status = by_name[name]["status"]
        assert status["state"] == "suppressed" and status["inhibitedBy"], (name, status)
        assert set(status["inhibitedBy"]) <= down_prints, (name, status)
        assert slack_messages(stack, name) == [] and mail_texts(stack, name) == [], f"{name} was delivered"
    (serving_down,) = [a for a in alerts if a["labels"].get("instance") == "model-blue:8501"]
    assert serving_down["status"]["state"] == "active"


def test_bridge_and_prometheus_logs_are_under_credit_risk_home(stack: dict):
    logs = settings().monitoring_dir / "logs"
    assert {p.stem for p in logs.glob("*.log")} == set(local_stack.SERVICES)
