"""Faults of the alert channels: SMTP and Slack down, hanging or failing once. `alerts.send` runs in the Airflow
environment, as the DAG's tasks run it, against real loopback servers; it must come back within its bound, retry,
log what it could not send, and still use the channel that works."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitoring.testing import MailSink, SlackSink, dag_alert_connections, free_port
from scripts import airflow_local
from tfx_modules import config

pytestmark = pytest.mark.faults

SEND = "import json; from dags.retraining import alerts; print('USED', json.dumps(alerts.send('fault drill', ['x'])))"
TIMEOUT = 1  # CREDIT_RISK_ALERT_TIMEOUT_SECONDS in these tests: a hanging endpoint costs a second per try
ATTEMPTS = 2


@contextlib.contextmanager
def serving(sink: SlackSink) -> Iterator[SlackSink]:
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    try:
        yield sink
    finally:
        sink.shutdown()
        sink.server_close()


@contextlib.contextmanager
def smtp_sink() -> Iterator[tuple[MailSink, int]]:
    from aiosmtpd.controller import Controller

    mail = MailSink()
    controller = Controller(mail, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield mail, controller.port
    finally:
        controller.stop()


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel completes them) and never says a word: a hung mail server."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def send_alert(tmp_path: Path, smtp_port: int, webhook_url: str) -> tuple[list[str], float, str]:
    """One `alerts.send` in a fresh Airflow-environment process: the channels it reached, seconds, its log."""
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(config.PROJECT_ROOT),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "CREDIT_RISK_HOME": str(tmp_path / "home"),
        "CREDIT_RISK_ALERT_TIMEOUT_SECONDS": str(TIMEOUT),
        "CREDIT_RISK_ALERT_ATTEMPTS": str(ATTEMPTS),
        **dag_alert_connections(smtp_port, webhook_url),
    }
    python = airflow_local.AIRFLOW.parent / "python"
    started = time.monotonic()
    result = subprocess.run([str(python), "-c", SEND], env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    used = next(line for line in result.stdout.splitlines() if line.startswith("USED "))
    return json.loads(used.removeprefix("USED ")), elapsed, result.stdout + result.stderr


# A try that hangs costs TIMEOUT, pauses between tries 1 s, 2 s ...; the process itself starts in about 5 s.
BOUND = 2 * (ATTEMPTS * TIMEOUT + sum(2**i for i in range(ATTEMPTS - 1))) + 20


def test_both_channels_down_is_logged_and_returns_within_its_bound(tmp_path: Path) -> None:
    closed = free_port()
    used, elapsed, log = send_alert(tmp_path, closed, f"http://127.0.0.1:{closed}/services/T/B/X")
    assert used == []
    assert elapsed < BOUND
    for channel in ("email", "slack"):
        assert f"alert 'fault drill' NOT sent via {channel}: {ATTEMPTS} tries failed" in log
        assert log.count(f"via {channel}: try ") == ATTEMPTS - 1


def test_hung_mail_server_and_slow_webhook_cost_a_bounded_time(tmp_path: Path) -> None:
    with silent_port() as hung, serving(SlackSink(delay=TIMEOUT + 2)) as slow:
        used, elapsed, log = send_alert(tmp_path, hung, slow.url)
    assert used == []
    assert elapsed < BOUND
    assert len(slow.received) == ATTEMPTS  # each try reached the webhook and gave up waiting for its answer
    assert "NOT sent via email" in log and "NOT sent via slack" in log


def test_a_failing_try_is_retried_and_one_channel_down_does_not_stop_the_other(tmp_path: Path) -> None:
    with serving(SlackSink(failures=1)) as flaky:
        used, _, log = send_alert(tmp_path, free_port(), flaky.url)
    assert used == ["slack"]
    assert len(flaky.received) == 2 and flaky.received[0] == flaky.received[1]
    assert "via slack: try 1 of 2 failed" in log
    assert "NOT sent via email" in log


def test_channels_that_work_get_the_alert_once(tmp_path: Path) -> None:
    with smtp_sink() as (mail, port), serving(SlackSink()) as slack:
        used, _, log = send_alert(tmp_path, port, slack.url)
    assert used == ["email", "slack"]
    assert len(mail.messages) == 1 and len(slack.received) == 1
    assert "failed" not in log
