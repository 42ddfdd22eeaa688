"""Monitoring configuration checked by the real tools: promtool, amtool, and the dashboards' structure and PromQL."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from common.config import PROJECT_ROOT, settings
from monitoring import grafana_dashboards, local_stack, render_alertmanager
from testing.harness import (
    check_promql_syntax,
    dashboard,
    metric_selectors,
    panel_queries,
    read_env_file,
    require_tool,
)

MONITORING = PROJECT_ROOT / "monitoring"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT)


def test_compose_prometheus_config_is_valid():
    result = run(require_tool("promtool"), "check", "config", str(MONITORING / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout + result.stderr


def test_local_prometheus_config_has_local_targets_and_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CREDIT_RISK_PROMETHEUS_PORT", "19990")
    monkeypatch.setenv("CREDIT_RISK_SERVING_URL", "http://127.0.0.1:18501")
    config = local_stack.render_prometheus_config(settings(), scrape_interval="1s")
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets["serving"] == ["127.0.0.1:18501"]
    assert targets["prometheus"] == ["127.0.0.1:19990"]
    assert all(t.startswith("127.0.0.1:") for ts in targets.values() for t in ts)
    assert config["global"]["evaluation_interval"] == "1s"
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = run(require_tool("promtool"), "check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_their_unit_tests():
    result = run(require_tool("promtool"), "test", "rules", str(MONITORING / "rules" / "tests" / "alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_unit_test():
    rules = yaml.safe_load((MONITORING / "rules" / "alerts.yml").read_text())
    alerts = {r["alert"] for group in rules["groups"] for r in group["rules"] if "alert" in r}
    assert alerts >= {"ServingDown", "ServingErrorRatioHigh", "ServingLatencyP99High", "DagRunFailed"}
    assert alerts >= {"DriftDetected", "ModelTooOld", "SchedulerHeartbeatMissing"}
    tests = yaml.safe_load((MONITORING / "rules" / "tests" / "alerts_test.yml").read_text())["tests"]
    cases = [c for t in tests for c in t.get("alert_rule_test", [])]
    fired = {c["alertname"] for c in cases if c.get("exp_alerts")}
    assert alerts == fired, f"alerts without a firing test: {alerts - fired}"


def test_alertmanager_config_from_env_example_is_valid(tmp_path: Path):
    path = tmp_path / "alertmanager.yml"
    path.write_text(render_alertmanager.render(render_alertmanager.TEMPLATE.read_text(), read_env_file(ENV_EXAMPLE)))
    result = run(require_tool("amtool"), "check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(path.read_text())
    receiver = config["receivers"][0]
    assert receiver["email_configs"] and receiver["slack_configs"]
    assert config["global"]["slack_api_url_file"].startswith("/run/secrets/")


def test_local_alertmanager_config_writes_secrets_to_private_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CREDIT_RISK_HOME", str(tmp_path))
    text = local_stack.render_alertmanager_config(settings(), {"ALERT_SLACK_WEBHOOK_URL": "http://127.0.0.1:1/x"})
    config = yaml.safe_load(text)
    secret = Path(config["global"]["slack_api_url_file"])
    assert secret.read_text() == "http://127.0.0.1:1/x"
    assert secret.stat().st_mode & 0o077 == 0
    assert "http://127.0.0.1:1/x" not in text
    path = tmp_path / "alertmanager.yml"
    path.write_text(text)
    result = run(require_tool("amtool"), "check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_render_names_every_missing_variable_and_escapes_values():
    with pytest.raises(ValueError, match="ALERT_EMAIL_FROM, ALERT_EMAIL_TO, ALERT_SMTP_SMARTHOST"):
        render_alertmanager.render(render_alertmanager.TEMPLATE.read_text(), {})
    assert render_alertmanager.render('a: "${X}"\n# ${Y}\n', {"X": 'q"\\'}) == 'a: "q\\"\\\\"\n# ${Y}\n'
    with pytest.raises(ValueError, match="single line"):
        render_alertmanager.render('a: "${X}"', {"X": "1\nb: 2"})


def test_render_cli_fails_clearly_without_writing(tmp_path: Path):
    out = tmp_path / "am.yml"
    result = subprocess.run(
        ["python3", str(MONITORING / "render_alertmanager.py"), str(render_alertmanager.TEMPLATE), str(out)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=30,
    )
    assert result.returncode == 1 and "set ALERT_EMAIL_FROM" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("name", sorted(grafana_dashboards.DASHBOARDS))
def test_dashboard_json_is_generated_from_its_source(name: str):
    committed = (grafana_dashboards.DASHBOARD_DIR / f"{name}.json").read_text()
    assert committed == grafana_dashboards.render(name), "run `python -m monitoring.grafana_dashboards`"


@pytest.mark.parametrize("name", sorted(grafana_dashboards.DASHBOARDS))
def test_dashboard_structure_and_promql(name: str, tmp_path: Path):
    board = dashboard(name)
    provisioned = yaml.safe_load((MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uids = {d["uid"] for d in provisioned["datasources"]}
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] in uids
        assert panel["targets"], panel["title"]
        assert all(t["datasource"]["uid"] in uids and t["expr"].strip() for t in panel["targets"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
    check_promql_syntax([expr for _, expr in panel_queries(board)], tmp_path)


def test_promql_syntax_check_catches_a_typo(tmp_path: Path):
    with pytest.raises(AssertionError, match="parse error"):
        check_promql_syntax(["sum(rate(x[1m])"], tmp_path)


def test_metric_selectors_see_through_fallbacks_aggregations_and_keywords():
    expr = 'sum by (a) (rate(x{a="}",b!~"q"}[5m] offset 1h)) > 1e6 and on (a) y or vector(0) unless max(z) / x'
    assert metric_selectors(expr) == ['x{a="}",b!~"q"}', "y", "z", "x"]
