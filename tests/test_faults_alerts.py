"""Faults of the alert channels: SMTP and Slack down, hanging or failing once. `alerts.send` runs in the Airflow
environment, as the DAG's tasks run it, against real loopback servers; it must come back within its bound, retry,
log what it could not send, and still use the channel that works."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.fault_drills import send_alert, silent_port
from testing.harness import MailSink, SlackSink, free_port

pytestmark = pytest.mark.faults

TIMEOUT = 1  # CREDIT_RISK_ALERT_TIMEOUT_SECONDS in these tests: a hanging endpoint costs a second per try
ATTEMPTS = 2


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


# Per channel: each try at most TIMEOUT, pauses of 1 s, 2 s ... between them; two channels; 8 s for the rest on a
# busy machine (reading the connections, building the clients). The providers' defaults took 30 s per try.
BOUND = 2 * (ATTEMPTS * TIMEOUT + sum(2**i for i in range(ATTEMPTS - 1))) + 8


def test_both_channels_down_is_logged_and_returns_within_its_bound(tmp_path: Path) -> None:
    closed = free_port()
    used, elapsed, log = send_alert(tmp_path, TIMEOUT, ATTEMPTS, closed, f"http://127.0.0.1:{closed}/services/T/B/X")
    assert used == []
    assert elapsed < BOUND
    for channel in ("email", "slack"):
        assert f"alert 'fault drill' NOT sent via {channel}: {ATTEMPTS} tries failed" in log
        assert log.count(f"via {channel}: try ") == ATTEMPTS - 1


def test_hung_mail_server_and_slow_webhook_cost_a_bounded_time(tmp_path: Path) -> None:
    with silent_port() as hung, SlackSink(delay=TIMEOUT + 2) as slow:
        used, elapsed, log = send_alert(tmp_path, TIMEOUT, ATTEMPTS, hung, slow.url)
    assert used == []
    assert elapsed < BOUND
    assert len(slow.received) == ATTEMPTS  # each try reached the webhook and gave up waiting for its answer
    assert "NOT sent via email" in log and "NOT sent via slack" in log


def test_a_failing_try_is_retried_and_one_channel_down_does_not_stop_the_other(tmp_path: Path) -> None:
    with SlackSink(failures=1) as flaky:
        used, _, log = send_alert(tmp_path, TIMEOUT, ATTEMPTS, free_port(), flaky.url)
    assert used == ["slack"]
    assert len(flaky.received) == 2 and flaky.received[0] == flaky.received[1]
    assert "via slack: try 1 of 2 failed" in log
    assert "NOT sent via email" in log


def test_channels_that_work_get_the_alert_once(tmp_path: Path) -> None:
    with smtp_sink() as (mail, port), SlackSink() as slack:
        used, _, log = send_alert(tmp_path, TIMEOUT, ATTEMPTS, port, slack.url)
    assert used == ["email", "slack"]
    assert len(mail.messages) == 1 and len(slack.received) == 1
    assert "failed" not in log
