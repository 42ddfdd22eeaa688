"""Helpers for tests that drive the real monitoring tools: reused by the monitoring tests and by end-to-end tests
that check the dashboards after a real DAG run (`assert_panels_return_data`)."""

from __future__ import annotations

import contextlib
import email
import json
import re
import secrets
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml

from common import features
from common.config import PROJECT_ROOT
from monitoring import local_stack
from monitoring.dashboard_page import grafana_macros, with_macros
from monitoring.grafana_dashboards import DASHBOARD_DIR
from testing.environment import require_tool as require_tool  # re-exported: tests import it from here

AIRFLOW_PYTHON = PROJECT_ROOT / ".venvs" / "airflow" / "bin" / "python"  # Airflow's own environment (3.11)

# Grafana's interval macros as Grafana fills them for an instant query (a 15 s step over the last hour).
GRAFANA_MACROS = grafana_macros(step=15, window=3600)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines of a .env file (comments and blank lines skipped)."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def dag_alert_connections(smtp_port: int, webhook_url: str) -> dict[str, str]:
    """Environment that points the DAG's email and Slack alerts (Airflow connections) at the loopback sinks."""
    smtp = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": smtp_port,
        "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "airflow@example.org"},
    }
    return {
        "CREDIT_RISK_ALERT_EMAIL_TO": "ml-team@example.org",
        "AIRFLOW_CONN_CREDIT_RISK_SMTP": json.dumps(smtp),
        "AIRFLOW_CONN_CREDIT_RISK_SLACK": json.dumps({"conn_type": "slackwebhook", "password": webhook_url}),
    }


_HANDED_OUT: set[tuple[int, int]] = set()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free on 127.0.0.1 now and never handed out before by this process: the kernel may offer a port it
    just released again, and two services given ports together must not get the same one."""
    while True:
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if (kind, port) not in _HANDED_OUT:
            _HANDED_OUT.add((kind, port))
            return port


def airflow_settings(home: Path) -> dict[str, str]:
    """Environment of a private Airflow (scripts/airflow_local.py) under `home`: a free port (on 127.0.0.1, the
    default host, so no log servers), a random password, no schedule (only the runs a test triggers), deploys to the
    local model server, swapping directly (a staged rollout waits for live traffic; its own test sends some)."""
    return {
        "AIRFLOW_HOME": str(home / "airflow"),
        "CREDIT_RISK_AIRFLOW_PORT": str(free_port()),
        "CREDIT_RISK_AIRFLOW_PASSWORD": secrets.token_urlsafe(16),
        "CREDIT_RISK_RETRAIN_SCHEDULE": "none",
        "CREDIT_RISK_DEPLOY_BACKEND": "local",
        "CREDIT_RISK_ROLLOUT_STAGES": "direct",
    }


def send_statsd(port: int, lines: list[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for line in lines:
            sock.sendto(line.encode(), ("127.0.0.1", port))


def get_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def query(prometheus_url: str, promql: str) -> list[dict]:
    """An instant query; raises on a PromQL error."""
    body = get_json(f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    if body["status"] != "success":
        raise AssertionError(f"{promql}: {body}")
    return body["data"]["result"]


def run_steps(steps: list[Callable[..., None]], *args: object) -> None:
    """A scenario test's named steps, in order, each called with `args` on the state the steps before it left (no
    test depends on another test having run): a failure names its step, and the steps after it do not run."""
    for number, step in enumerate(steps, 1):
        try:
            step(*args)
        except AssertionError as failure:
            raise AssertionError(f"step {number}/{len(steps)} {step.__name__}: {failure}") from failure


def wait_for(check: Callable[[], object], timeout: float, what: str, interval: float = 0.5) -> object:
    """Poll until `check()` returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def dashboard(name: str) -> dict:
    return json.loads((DASHBOARD_DIR / f"{name}.json").read_text())


def panel_queries(board: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's macros replaced) for every target of every panel."""
    out = []
    for panel in board["panels"]:
        for target in panel["targets"]:
            out.append((panel["title"], with_macros(target["expr"], GRAFANA_MACROS)))
    return out


_STRING = r'"(?:[^"\\]|\\.)*"'
_PROMQL_TOKEN = re.compile(
    rf"""(?P<skip>\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)  # label lists
      | \[[^\]]*\] | {_STRING} | \boffset\s+\w+ | \d+(?:\.\d+)?(?:e[+-]?\d+)?\w*)       # ranges, strings, numbers
    | (?P<selector>[a-zA-Z_:][a-zA-Z0-9_:]*(?:\s*\{{(?:[^}}"]|{_STRING})*\}})?)
      (?P<call>\s*(?:(?:by|without)\s*\([^)]*\)\s*)?\()?  # a function or an aggregation, not a metric""",
    re.VERBOSE,
)
_PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}


def metric_selectors(expr: str) -> list[str]:
    """The vector selectors (`name{matchers}`) of a PromQL expression, each of which can be queried on its own: a
    panel or rule whose metric is missing still answers through `or vector(0)` or a fallback metric, its selectors do
    not."""
    found: dict[str, None] = {}
    for token in _PROMQL_TOKEN.finditer(expr):
        selector = token["selector"]
        if selector and not token["call"] and selector.split("{")[0].strip() not in _PROMQL_WORDS:
            found[re.sub(r"\s+(?=\{)", "", selector)] = None
    return list(found)


def check_promql_syntax(expressions: list[str], workdir: Path) -> None:
    """Parse every expression with promtool (as recording rules), so a typo fails without a server."""
    promtool = require_tool("promtool")
    rules = {
        "groups": [{"name": "syntax", "rules": [{"record": f"q{i}", "expr": e} for i, e in enumerate(expressions)]}]
    }
    path = workdir / "panel_queries.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def assert_panels_return_data(prometheus_url: str, board: dict, timeout: float = 30.0, unless: str = "") -> None:
    """Every panel query of `board` (but those naming `unless`) runs on the live Prometheus and returns a series."""
    for title, expr in panel_queries(board):
        if not (unless and unless in expr):
            wait_for(lambda expr=expr: query(prometheus_url, expr), timeout, f"data for panel {title!r}: {expr}")


@contextlib.contextmanager
def running_stack(home: Path, serving_url: str, env: Mapping[str, str] = {}) -> Iterator[dict]:
    """The local monitoring stack on free ports under `home`, scraping `serving_url`, evaluating every second.

    Yields the service URLs plus `statsd_port`; stops every service afterwards and checks that they are gone."""
    for tool in ("prometheus", "prometheus-alertmanager"):
        require_tool(tool)
    settings = {
        "CREDIT_RISK_HOME": str(home),
        "CREDIT_RISK_SERVING_URL": serving_url,
        "CREDIT_RISK_MODEL_SERVER_URL": f"http://127.0.0.1:{free_port()}",
        "CREDIT_RISK_STATSD_PORT": str(free_port(socket.SOCK_DGRAM)),
        "CREDIT_RISK_STATSD_METRICS_PORT": str(free_port()),
        "CREDIT_RISK_PROMETHEUS_PORT": str(free_port()),
        "CREDIT_RISK_ALERTMANAGER_PORT": str(free_port()),
        **env,
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in settings.items():
            patch.setenv(key, value)
        try:
            yield {**local_stack.start(scrape_interval="1s"), "statsd_port": int(settings["CREDIT_RISK_STATSD_PORT"])}
        finally:
            stopped = local_stack.stop()
        assert sorted(stopped) == sorted(local_stack.SERVICES)
        assert all(pid is None for pid in local_stack.status().values())


class SlackSink(ThreadingHTTPServer):
    """Answers like Slack's incoming webhook (200 `ok`) and keeps every JSON body it got; for fault tests, each answer
    after `delay` seconds, and the first `failures` ones 500 (those bodies are kept too)."""

    def __init__(self, delay: float = 0.0, failures: int = 0) -> None:
        self.received: list[dict] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                sink.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                time.sleep(delay)
                failed = len(sink.received) <= failures
                self.send_response(500 if failed else 200)
                self.end_headers()
                self.wfile.write(b"internal_error" if failed else b"ok")

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that stopped waiting for a slow answer (fault tests) is no error of the sink's."""
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)

    def __enter__(self) -> SlackSink:
        """Serving from a thread of its own until the block ends."""
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/services/T/B/X"

    def texts(self) -> list[str]:
        return [json.dumps(body) for body in self.received]


class MailSink:
    """An aiosmtpd handler that keeps every message it got, as text."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(envelope.content.decode("utf-8", errors="replace"))
        return "250 OK"


def live_record(drifted: str) -> dict:
    """A monitoring run's record (as `live_monitor.run` writes it) in which only `drifted` drifted (outcomes as in
    `performance_record`)."""
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
        "performance": performance_record(None),
    }


def performance_record(decay: str | None) -> dict:
    """A run record's `performance` as outcomes/join.py writes it: version 7 half labelled, an outcome
    file quarantined, `decay` the decay verdict."""
    from outcomes import performance

    rng = np.random.default_rng(0)
    p = rng.uniform(0.02, 0.98, 400)
    label, outcome = (p >= 0.5).astype(int), (rng.uniform(size=400) < p).astype(int)
    found = {
        "labelled": 200,
        "unlabelled": 200,
        "realized": performance.realized(p[:200], label[:200], outcome[:200]),
        "estimated": performance.estimated(p[200:], label[200:]),
        "evaluation_auc": 0.9,
    }
    serving = {"version": 7, "evaluation_auc": 0.9, "decay": decay, "floor": 0.8, "margin": 0.05, "min_labelled": 200}
    quarantined = {"name": "o.csv", "status": "quarantined", "reason": "empty file", "path": "/q/o.csv"}
    return {
        "versions": {"7": {**found, "vintages": {"2026-W48": found}}},
        "serving": serving,
        "files": [quarantined],
        "quarantined": ["o.csv"],
        "labelled": 200,
        "waiting": 3,
        "batch": None,
    }


@contextlib.contextmanager
def statsd_sink() -> Iterator[tuple[int, list[str]]]:
    """A StatsD (UDP) port on 127.0.0.1 read by a thread while the caller runs; yields the port and the list the
    lines collect in. Read at once, not afterwards: a DAG run sends more than a socket's buffer holds (Airflow's own
    metrics), and what arrives past a full buffer is dropped."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    lines: list[str] = []

    def receive() -> None:
        while True:
            try:
                lines.extend(udp.recv(65536).decode().splitlines())
            except OSError:
                return

    threading.Thread(target=receive, daemon=True).start()
    try:
        yield udp.getsockname()[1], lines
    finally:
        udp.close()


@contextlib.contextmanager
def alert_sinks() -> Iterator[tuple[SlackSink, MailSink, int]]:
    """A Slack-style webhook sink and an SMTP sink on 127.0.0.1; yields them and the SMTP port."""
    from aiosmtpd.controller import Controller

    mail = MailSink()
    smtp = Controller(mail, hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        with SlackSink() as slack:
            yield slack, mail, smtp.port
    finally:
        smtp.stop()


@dataclass(frozen=True)
class MonitorDagRun:
    """What one monitoring DAG run left: its output lines (the last is the outcome), the alert emails' subjects, the
    Slack texts, the StatsD gauges it sent, and the extras of every asset event in its home's Airflow so far."""

    lines: list[str]
    subjects: list[str]
    slack: list[str]
    gauges: dict[str, float]
    asset_extras: list[dict]


def monitor_dag_run(home: Path, **env: str) -> MonitorDagRun:
    """One run of the monitoring DAG (`airflow dags test`, as `make run-monitor` runs it) on `home`, with `env` on
    top, its StatsD packets and alerts caught by loopback sinks."""
    from testing import airflow_sandbox

    with alert_sinks() as (slack, mail, smtp_port), statsd_sink() as (statsd_port, packets):
        settings = {
            "PATH": "/usr/bin:/bin",
            "CREDIT_RISK_HOME": str(home),
            "AIRFLOW_HOME": str(home / "airflow"),
            "CREDIT_RISK_STATSD_HOST": "127.0.0.1",
            "CREDIT_RISK_STATSD_PORT": str(statsd_port),
            **dag_alert_connections(smtp_port, slack.url),
            **env,
        }
        result = airflow_sandbox.run_dag_process(settings, conf={}, timeout=600, command_name="run-monitor")
        lines = result.stdout.strip().splitlines()
        assert result.returncode == 0 and lines, result.stderr[-3000:]
        subjects = [str(email.message_from_string(m, policy=policy.default)["subject"]) for m in mail.messages]
        texts = slack.texts()
    gauges = {k: float(v) for k, v in (p.removesuffix("|g").split(":", 1) for p in packets if p.endswith("|g"))}
    with sqlite3.connect(home / "airflow" / "airflow.db") as db:
        extras = [json.loads(e) for (e,) in db.execute("select extra from asset_event")]
    return MonitorDagRun(lines, subjects, texts, gauges, extras)
