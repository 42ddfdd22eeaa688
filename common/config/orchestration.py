"""Airflow: where it runs, its executor, the DAGs' schedules and their alert channels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.config import environment


@dataclass(frozen=True, kw_only=True)
class Orchestration:
    airflow_home: Path
    airflow_port: int = 8080  # the local Airflow's API server and UI
    airflow_host: str = "127.0.0.1"  # the address it listens on; another one exposes it (and its log servers)
    airflow_executor: str = "LocalExecutor"  # LocalExecutor | CeleryExecutor (Redis broker, `celery_workers` workers)
    celery_broker_url: str = "redis://127.0.0.1:6379/0"  # also the result backend (Celery cannot use SQLite)
    celery_workers: int = 2  # the local Airflow's `airflow celery worker` processes (concurrency 1 each)
    retrain_schedule: str | None = "@daily"  # cron expression or preset of the retraining DAG; None: triggered only
    monitor_schedule: str | None = "@hourly"  # the live monitoring DAG's schedule; None: triggered only
    alert_email_to: tuple[str, ...] = ()  # recipients of the DAG's alert emails (sender: the SMTP connection)
    alert_attempts: int = 3  # tries per alert and channel (email, Slack) before the failure is logged and skipped
    alert_timeout_seconds: float = 10.0  # one try's limit: a mail server or webhook that hangs costs no more

    @property
    def airflow_url(self) -> str:
        """The local Airflow's UI and REST API (also its `[api] base_url`, from which tasks find the execution API)."""
        return f"http://localhost:{self.airflow_port}"


def from_environment(home: Path) -> dict:
    """This area's settings from the environment, each with its default."""
    return dict(
        airflow_home=environment.path("AIRFLOW_HOME", home / "airflow"),
        airflow_port=int(environment.text("CREDIT_RISK_AIRFLOW_PORT", "8080")),
        airflow_host=environment.text("CREDIT_RISK_AIRFLOW_HOST", "127.0.0.1"),
        airflow_executor=environment.text("AIRFLOW_EXECUTOR", "LocalExecutor"),
        celery_broker_url=environment.text("CREDIT_RISK_CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
        celery_workers=int(environment.text("CREDIT_RISK_CELERY_WORKERS", "2")),
        retrain_schedule=environment.schedule(environment.text("CREDIT_RISK_RETRAIN_SCHEDULE", "@daily")),
        monitor_schedule=environment.schedule(environment.text("CREDIT_RISK_MONITOR_SCHEDULE", "@hourly")),
        alert_email_to=tuple(
            a.strip() for a in environment.text("CREDIT_RISK_ALERT_EMAIL_TO", "").split(",") if a.strip()
        ),
        alert_attempts=max(1, int(environment.text("CREDIT_RISK_ALERT_ATTEMPTS", "3"))),
        alert_timeout_seconds=float(environment.text("CREDIT_RISK_ALERT_TIMEOUT_SECONDS", "10")),
    )
