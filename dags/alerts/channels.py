"""Alerts to people, by email (SMTP provider) and Slack (incoming-webhook provider).

Where they go is configuration, not code: the Airflow connections `credit_risk_smtp` (host, port, `from_email`
in its extra) and `credit_risk_slack` (the webhook URL as password), set in the UI or as AIRFLOW_CONN_* variables,
and the recipients in `CREDIT_RISK_ALERT_EMAIL_TO`. A channel without its connection is skipped with a warning, so
a laptop without a mail server still runs the DAG. A configured channel that is down or hangs is tried
`alert_attempts` times, each try bounded by `alert_timeout_seconds`, then the failure is logged as an error and the
other channel still tried: an alert never blocks training or deploy, nor fails the run it reports on.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Callable

from common.config import settings

SMTP_CONN_ID = "credit_risk_smtp"
SLACK_CONN_ID = "credit_risk_slack"
FIRST_RETRY_DELAY = 1.0  # seconds before the second try; doubled before each further one
log = logging.getLogger(__name__)


def _configured(conn_id: str) -> bool:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        log.warning("alert channel %s is not configured (no connection): skipped", conn_id)
        return False
    return True


def _email(subject: str, text: str, recipients: tuple[str, ...], timeout: float) -> None:
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    class OneTry(SmtpHook):
        """One connection and one send per try, bounded in time: `_attempts` retries both channels alike (the
        provider's defaults: 30 s per try, 6 tries of a send)."""

        timeout = property(lambda self: timeout)
        smtp_retry_limit = property(lambda self: 0)

    with OneTry(smtp_conn_id=SMTP_CONN_ID) as hook:
        hook.send_email_smtp(
            to=list(recipients), subject=f"[credit-risk] {subject}", html_content=f"<pre>{html.escape(text)}</pre>"
        )


def _slack(text: str, timeout: float) -> None:
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

    # No retry handlers: `_attempts` retries (slack_sdk's own retry would also log the webhook URL, a secret).
    hook = SlackWebhookHook(slack_webhook_conn_id=SLACK_CONN_ID, timeout=max(1, round(timeout)), retry_handlers=[])
    hook.send_text(text)


def _attempts(channel: str, subject: str, send_once: Callable[[], None], attempts: int) -> bool:
    """Try `send_once` up to `attempts` times with growing pauses; log each failure, True once it went through."""
    started = time.monotonic()
    for attempt in range(1, attempts + 1):
        try:
            send_once()
            return True
        except Exception as error:  # any failure of a channel: retried, then logged
            reason = f"{type(error).__name__}: {error}"
            if attempt < attempts:
                log.warning(
                    "alert %r via %s: try %d of %d failed (%s); retrying", subject, channel, attempt, attempts, reason
                )
                time.sleep(FIRST_RETRY_DELAY * 2 ** (attempt - 1))
    log.error(
        "alert %r NOT sent via %s: %d tries failed in %.1fs, last: %s",
        subject,
        channel,
        attempts,
        time.monotonic() - started,
        reason,
    )
    return False


def send(subject: str, lines: list[str]) -> list[str]:
    """Send one alert to every configured channel; returns the channels it reached."""
    text = "\n".join([subject, *lines])
    config = settings()
    channels: dict[str, Callable[[], None]] = {}
    if not config.alert_email_to:
        log.warning("no alert recipients (CREDIT_RISK_ALERT_EMAIL_TO): email skipped")
    elif _configured(SMTP_CONN_ID):
        channels["email"] = lambda: _email(subject, text, config.alert_email_to, config.alert_timeout_seconds)
    if _configured(SLACK_CONN_ID):
        channels["slack"] = lambda: _slack(text, config.alert_timeout_seconds)
    used = [name for name, once in channels.items() if _attempts(name, subject, once, config.alert_attempts)]
    log.info("alert %r sent via %s", subject, used or "no channel")
    return used


def task_failed(context: dict) -> None:
    """`on_failure_callback` of every task: which task of which run failed, why, and where its log is."""
    ti = context["ti"]
    error = context.get("exception")
    send(
        f"task {ti.dag_id}.{ti.task_id} failed",
        [
            f"run: {context['run_id']}",
            f"try: {ti.try_number}",
            f"error: {type(error).__name__}: {error}" if error else "error: unknown",
            f"log: {getattr(ti, 'log_url', '(see the Airflow UI)')}",
        ],
    )
