"""Secrets: after a real DAG run whose alerts fire (a quarantined batch), with a mail server that requires the SMTP
password and a Slack webhook that is down (its error paths are where a URL gets logged), neither the password nor
the webhook URL's secret part is anywhere: not in the run's output, any file under CREDIT_RISK_HOME (task logs,
reports, ledger, Airflow's database) nor in the alert that went out. The run itself finishes with Slack down."""

from __future__ import annotations

import contextlib
import email
import json
import secrets
import socket
from collections.abc import Iterator
from email import policy
from pathlib import Path

import pytest

from data.generate import generate
from testing import airflow_sandbox
from testing.harness import MailSink, free_port

pytestmark = [pytest.mark.faults, pytest.mark.slow]

USER = "alerts"


@contextlib.contextmanager
def smtp_requiring(password: str) -> Iterator[tuple[MailSink, int]]:
    """An SMTP sink that takes mail only after AUTH with USER and `password`."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
        return AuthResult(success=(auth_data.login, auth_data.password) == (USER.encode(), password.encode()))

    mail = MailSink()
    controller = Controller(
        mail,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=authenticate,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield mail, controller.port
    finally:
        controller.stop()


def files_containing(folder: Path, needles: list[bytes]) -> list[str]:
    return [
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and any(n in p.read_bytes() for n in needles)
    ]


def test_no_secret_in_logs_reports_or_alerts_after_a_run_with_alerts(tmp_path: Path) -> None:
    password, token = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    webhook = f"http://127.0.0.1:{free_port()}/services/T0/B0/{token}"  # nothing listens there
    home = tmp_path / "home"
    batch = tmp_path / "no_column.csv"
    batch.write_bytes(generate(200, seed=31).drop(columns=["loan_amnt"]).to_csv(index=False).encode())
    statsd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    statsd.bind(("127.0.0.1", 0))
    smtp = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "login": USER,
        "password": password,
        "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "airflow@example.org"},
    }
    with smtp_requiring(password) as (mail, port), airflow_sandbox.sandbox(home) as sandbox, statsd:
        env = {
            "PATH": "/usr/bin:/bin",
            **sandbox,
            "CREDIT_RISK_STATSD_PORT": str(statsd.getsockname()[1]),
            "CREDIT_RISK_ALERT_EMAIL_TO": "ml-team@example.org",
            "CREDIT_RISK_ALERT_TIMEOUT_SECONDS": "2",
            "AIRFLOW_CONN_CREDIT_RISK_SMTP": json.dumps({**smtp, "port": port}),
            "AIRFLOW_CONN_CREDIT_RISK_SLACK": json.dumps({"conn_type": "slackwebhook", "password": webhook}),
        }
        result = airflow_sandbox.run_dag_process(env, batch, {"gate_only": True}, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert result.stdout.strip().splitlines()[-1].startswith("quarantined: ")
    assert "alert 'batch no_column.csv quarantined' NOT sent via slack" in output
    (sent,) = (email.message_from_string(m, policy=policy.default) for m in mail.messages)
    assert str(sent["subject"]) == "[credit-risk] batch no_column.csv quarantined"

    needles = [password, token]
    assert [n for n in needles if n in output] == []
    assert [n for n in needles if any(n in m for m in mail.messages)] == []
    assert files_containing(home, [n.encode() for n in needles]) == []
    assert (home / "airflow" / "logs").is_dir()  # the task logs were among the files searched
