"""Alerts to people, by email (SMTP provider) and Slack (incoming-webhook provider).

Where they go is configuration, not code: the Airflow connections `credit_risk_smtp` (host, port, `from_email`
in its extra) and `credit_risk_slack` (the webhook URL as password), set in the UI or as AIRFLOW_CONN_* variables,
and the recipients in `CREDIT_RISK_ALERT_EMAIL_TO`. A channel without its connection is skipped with a warning, so
a laptop without a mail server still runs the DAG; a configured channel that fails raises (the task retries).
"""

from __future__ import annotations

import html
import logging

from tfx_modules.config import settings

SMTP_CONN_ID = "credit_risk_smtp"
SLACK_CONN_ID = "credit_risk_slack"
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


def send(subject: str, lines: list[str]) -> list[str]:
    """Send one alert to every configured channel; returns the channels used."""
    text = "\n".join([subject, *lines])
    used = []
    recipients = settings().alert_email_to
    if recipients and _configured(SMTP_CONN_ID):
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        with SmtpHook(smtp_conn_id=SMTP_CONN_ID) as hook:
            hook.send_email_smtp(
                to=list(recipients), subject=f"[credit-risk] {subject}", html_content=f"<pre>{html.escape(text)}</pre>"
            )
        used.append("email")
    elif not recipients:
        log.warning("no alert recipients (CREDIT_RISK_ALERT_EMAIL_TO): email skipped")
    if _configured(SLACK_CONN_ID):
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

        SlackWebhookHook(slack_webhook_conn_id=SLACK_CONN_ID).send_text(text)
        used.append("slack")
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
