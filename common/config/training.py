"""The TFX pipeline and its gates: the runner, the model's inputs, the blessing and fairness floors, the ML worker."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from common import features
from common.config import environment
from common.config.environment import PROJECT_ROOT

DEFAULT_NUMERIC_DRIFT = 0.1  # Jensen-Shannon divergence; a random resample of the real data measures ~0.03
DEFAULT_CATEGORICAL_DRIFT = 0.05  # L-infinity distance; a random resample measures ~0.01
DEFAULT_AGE_BANDS = (25, 35, 50)  # lower edges of the fairness gate's age bands after the first: <25 .. 50+
# The fairness gate's limits by sensitive feature and fairlearn difference; a feature not named is reported only.
# Home ownership is a legitimate risk driver (default rates 7-32 % on the real data): reported, not gated.
DEFAULT_FAIRNESS_LIMITS = {"age_band": {"demographic_parity_difference": 0.15, "equalized_odds_difference": 0.25}}


def fairness_limits() -> dict[str, dict[str, float]]:
    """The fairness gate's limits: DEFAULT_FAIRNESS_LIMITS, features overridden by `CREDIT_RISK_FAIRNESS_LIMITS`
    (JSON, e.g. `{"person_home_ownership": {"demographic_parity_difference": 0.3}}`; `{}` for a feature: none)."""
    overrides = json.loads(environment.text("CREDIT_RISK_FAIRNESS_LIMITS", "{}"))
    limits = {**DEFAULT_FAIRNESS_LIMITS, **overrides}
    return {feature: {metric: float(v) for metric, v in by_metric.items()} for feature, by_metric in limits.items()}


def default_drift_thresholds() -> dict[str, float]:
    """Per-feature drift thresholds: defaults by kind, overridden by `CREDIT_RISK_DRIFT_THRESHOLDS` (JSON)."""
    thresholds = {
        f.name: DEFAULT_CATEGORICAL_DRIFT if f.categorical else DEFAULT_NUMERIC_DRIFT for f in features.FEATURES
    }
    overrides = json.loads(environment.text("CREDIT_RISK_DRIFT_THRESHOLDS", "{}"))
    unknown = set(overrides) - set(thresholds)
    if unknown:
        raise ValueError(f"CREDIT_RISK_DRIFT_THRESHOLDS names unknown features: {sorted(unknown)}")
    return {**thresholds, **{k: float(v) for k, v in overrides.items()}}


@dataclass(frozen=True, kw_only=True)
class Training:
    ml_python: Path
    beam_args: tuple[str, ...]  # a DirectRunner without a running mode gets one by input size (tfx_modules/pipeline.py)
    beam_multiprocess_rows: int = 200_000  # larger inputs run on the DirectRunner's multi-processing mode
    decision_threshold: float
    min_auc: float
    min_accuracy: float
    # The trees' seed (row and attribute sampling). Training is deterministic for one seed; another seed is a
    # retrain's own randomness, the null case rollout limits are calibrated on (docs/rollouts.md).
    train_seed: int = 0
    # The model's derived inputs (tfx_modules/model.py: DERIVED_INPUTS), off by default: the declared-ratio gap
    # exploits how the public dataset recorded loan_percent_income and carries nothing on real intake traffic.
    derived_inputs: bool = False
    use_age: bool = True  # person_age as a model input (off: the model never sees it; the fairness gate still does)
    age_bands: tuple[int, ...] = DEFAULT_AGE_BANDS  # the fairness gate's age bands (their lower edges)
    fairness_limits: dict[str, dict[str, float]] = field(default_factory=lambda: dict(DEFAULT_FAIRNESS_LIMITS))
    fairness_min_group_rows: int = 30  # examples behind a group's rate (rows, defaults, non-defaults) for it to count
    ml_worker: bool = True  # ML-environment calls go to the warm worker; off: each call in a fresh process
    ml_worker_idle_seconds: float = 1800.0  # an idle warm worker exits after this long (0: never; it holds ~1 GB)
    ml_worker_start_seconds: float = 300.0  # how long a call waits for a starting worker before a fresh process
    ml_worker_answer_seconds: float = 30.0  # a worker that takes a call but does not start it within this is hung


def from_environment() -> dict:
    """This area's settings from the environment, each with its default."""
    return dict(
        ml_python=environment.path("CREDIT_RISK_ML_PYTHON", PROJECT_ROOT / ".venvs" / "ml" / "bin" / "python"),
        beam_args=tuple(shlex.split(environment.text("CREDIT_RISK_BEAM_ARGS", "--runner=DirectRunner"))),
        beam_multiprocess_rows=int(environment.text("CREDIT_RISK_BEAM_MULTIPROCESS_ROWS", "200000")),
        decision_threshold=float(environment.text("CREDIT_RISK_DECISION_THRESHOLD", "0.5")),
        min_auc=float(environment.text("CREDIT_RISK_MIN_AUC", "0.80")),
        min_accuracy=float(environment.text("CREDIT_RISK_MIN_ACCURACY", "0.80")),
        train_seed=int(environment.text("CREDIT_RISK_TRAIN_SEED", "0")),
        derived_inputs=environment.text("CREDIT_RISK_DERIVED_INPUTS", "off").strip().lower() == "on",
        use_age=environment.text("CREDIT_RISK_USE_AGE", "on").strip().lower() != "off",
        age_bands=environment.ints(
            environment.text("CREDIT_RISK_FAIRNESS_AGE_BANDS", ",".join(map(str, DEFAULT_AGE_BANDS)))
        ),
        fairness_limits=fairness_limits(),
        fairness_min_group_rows=int(environment.text("CREDIT_RISK_FAIRNESS_MIN_GROUP_ROWS", "30")),
        ml_worker=environment.text("CREDIT_RISK_ML_WORKER", "on").strip().lower() != "off",
        ml_worker_idle_seconds=float(environment.text("CREDIT_RISK_ML_WORKER_IDLE_SECONDS", "1800")),
        ml_worker_start_seconds=float(environment.text("CREDIT_RISK_ML_WORKER_START_SECONDS", "300")),
        ml_worker_answer_seconds=float(environment.text("CREDIT_RISK_ML_WORKER_ANSWER_SECONDS", "30")),
    )
