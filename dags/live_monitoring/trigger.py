"""The link from live monitoring to retraining: an Airflow Asset the monitoring DAG updates on live drift and the
retraining DAG is scheduled on (besides its time schedule).

Retraining is triggered only when CREDIT_RISK_LIVE_DRIFT_RETRAIN is set and labelled data the serving model was not
trained on exists (accepted batches newer than it): retraining on the same data would give the same model. The
event's extra names the drifted features, so the retraining run's gate can say why it retrains.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable

LIVE_DRIFT = Asset("credit_risk_live_drift")


def timetable(cron: str) -> CronTriggerTimetable:
    """A DAG's time schedule: `cron` (or a preset) in UTC whose first run waits for the next tick (run_immediately=0)
    instead of starting at once for the last one."""
    return CronTriggerTimetable(cron, timezone="UTC", run_immediately=timedelta(0))


def retraining_schedule(cron: str | None) -> AssetOrTimeSchedule | list[Asset]:
    """The retraining DAG's schedule: its cron (or preset) or a live-drift event, whichever comes first."""
    if cron is None:
        return [LIVE_DRIFT]
    return AssetOrTimeSchedule(timetable=timetable(cron), assets=[LIVE_DRIFT])


def newer_labelled_batches(serving: dict | None, accepted: list[dict]) -> list[str]:
    """Names of accepted (labelled) batches the serving model was not trained on."""
    trained = set(serving["batches"]) if serving else set()
    return [b["name"] for b in accepted if b["sha256"] not in trained]


def why_not_retrain(record: dict, enabled: bool, newer: list[str]) -> str | None:
    """Why a monitoring run does not trigger retraining, or None when it does."""
    if record["verdict"] != "drift":
        return "no live drift"
    if not enabled:
        return "live drift alerts only (CREDIT_RISK_LIVE_DRIFT_RETRAIN is off)"
    if not newer:
        return "no labelled data newer than the serving model"
    return None


def live_drift_reason(events: Mapping[Any, Any] | None) -> str | None:
    """'person_income, score (monitoring run <id>)' when the run was triggered by a live-drift event, else None."""
    for asset, found in (events or {}).items():
        if getattr(asset, "name", asset) in (LIVE_DRIFT.name, LIVE_DRIFT.uri) and found:
            extra = found[-1].extra or {}
            return f"{', '.join(extra.get('drifted', [])) or 'live traffic'} (monitoring run {extra.get('run_id')})"
    return None
