"""All run-time configuration: environment variables with defaults, read when asked so tests can relocate state.

One `Settings` object, composed of one dataclass per area, each in its own module with the variables it reads:
storage (CREDIT_RISK_HOME and its layout), training (the pipeline and its gates), serving, orchestration (Airflow)
and monitoring. Every piece of state lives under `CREDIT_RISK_HOME`, readable by its owner only
(common/permissions.py). Standard library only: both the Airflow and the ML environment import it.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.config import environment, monitoring, orchestration, serving, storage, training
from common.config.environment import MODEL_NAME, PROJECT_ROOT
from common.config.training import (
    DEFAULT_AGE_BANDS,
    DEFAULT_FAIRNESS_LIMITS,
    DEFAULT_NUMERIC_DRIFT,
    default_drift_thresholds,
)

__all__ = [
    "DEFAULT_AGE_BANDS",
    "DEFAULT_FAIRNESS_LIMITS",
    "DEFAULT_NUMERIC_DRIFT",
    "MODEL_NAME",
    "PROJECT_ROOT",
    "Settings",
    "default_drift_thresholds",
    "settings",
]


@dataclass(frozen=True, kw_only=True)
class Settings(storage.Storage, training.Training, serving.Serving, orchestration.Orchestration, monitoring.Monitoring):
    """Every area's settings in one object: `settings().model_dir`, `settings().serving_url`, ..."""


def settings() -> Settings:
    home = environment.path("CREDIT_RISK_HOME", PROJECT_ROOT / "var")
    return Settings(
        **storage.from_environment(home),
        **training.from_environment(),
        **serving.from_environment(),
        **orchestration.from_environment(home),
        **monitoring.from_environment(),
    )
