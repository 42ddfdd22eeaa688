"""The link from live monitoring to retraining: Airflow Assets the monitoring DAG updates on live drift and on
performance decay, and the retraining DAG is scheduled on (besides its time schedule).

Retraining is triggered only when CREDIT_RISK_LIVE_DRIFT_RETRAIN is set and labelled data the serving model was not
trained on exists (accepted batches newer than it): retraining on the same data would give the same model. The
event's extra names the drifted features, so the retraining run's gate can say why it retrains. Decay (the serving
version's realized, or with CREDIT_RISK_DECAY_ON_ESTIMATE estimated, AUC under its floor) always triggers: the
joined outcomes it was measured on are already a batch in the incoming folder; the event's extra gives the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable

LIVE_DRIFT = Asset("credit_risk_live_drift")
PERFORMANCE_DECAY = Asset("credit_risk_performance_decay")  # the serving version's AUC under a floor (outcome_join)


def timetable(cron: str) -> CronTriggerTimetable:
    """A DAG's time schedule: `cron` (or a preset) in UTC whose first run waits for the next tick (run_immediately=0)
    instead of starting at once for the last one."""
    return CronTriggerTimetable(cron, timezone="UTC", run_immediately=timedelta(0))


def retraining_schedule(cron: str | None) -> AssetOrTimeSchedule | list[Asset]:
    """The retraining DAG's schedule: its cron (or preset), a live-drift or a performance-decay event, whichever
    comes first."""
    if cron is None:
        return LIVE_DRIFT | PERFORMANCE_DECAY
    return AssetOrTimeSchedule(timetable=timetable(cron), assets=LIVE_DRIFT | PERFORMANCE_DECAY)


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


def _extra(events: Mapping[Any, Any] | None, wanted: Asset) -> dict | None:
    """The extra of the newest event of `wanted` among a run's triggering events, None without one."""
    for asset, found in (events or {}).items():
        if getattr(asset, "name", asset) in (wanted.name, wanted.uri) and found:
            return found[-1].extra or {}
    return None


def live_drift_reason(events: Mapping[Any, Any] | None) -> str | None:
    """'person_income, score (monitoring run <id>)' when the run was triggered by a live-drift event, else None."""
    extra = _extra(events, LIVE_DRIFT)
    if extra is None:
        return None
    return f"{', '.join(extra.get('drifted', [])) or 'live traffic'} (monitoring run {extra.get('run_id')})"


def decay_reason(events: Mapping[Any, Any] | None) -> str | None:
    """'realized AUC 0.71 of version 3 is below ... (monitoring run <id>)' for a run a decay event triggered."""
    extra = _extra(events, PERFORMANCE_DECAY)
    if extra is None:
        return None
    return f"{extra.get('reason', 'performance decay')} (monitoring run {extra.get('run_id')})"
