"""All run-time configuration: environment variables with defaults, read when asked so tests can relocate state.

Every piece of state (incoming, accepted and quarantined batches, the TFX pipeline root, ML Metadata, pushed
models, reports) lives under one directory, `CREDIT_RISK_HOME`, readable by its owner only (tfx_modules/private.py).
Standard library only: both the Airflow and the ML environment import it.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from tfx_modules import features

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MODEL_NAME = "credit_risk"
DEFAULT_NUMERIC_DRIFT = 0.1  # Jensen-Shannon divergence; a random resample of the real data measures ~0.03
DEFAULT_CATEGORICAL_DRIFT = 0.05  # L-infinity distance; a random resample measures ~0.01
DEFAULT_AGE_BANDS = (25, 35, 50)  # lower edges of the fairness gate's age bands after the first: <25 .. 50+
# The fairness gate's limits by sensitive feature and fairlearn difference; a feature not named is reported only.
# Home ownership is a legitimate risk driver (default rates 7-32 % on the real data): reported, not gated.
DEFAULT_FAIRNESS_LIMITS = {"age_band": {"demographic_parity_difference": 0.15, "equalized_odds_difference": 0.25}}


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _path(name: str, default: Path | None) -> Path | None:
    """An absolute path; symlinks are kept (a venv's bin/python is a symlink and must be run as such)."""
    return Path(os.path.abspath(os.environ[name])) if os.environ.get(name) else default


def _ints(value: str) -> tuple[int, ...]:
    return tuple(int(part) for part in value.split(",") if part.strip())


def fairness_limits() -> dict[str, dict[str, float]]:
    """The fairness gate's limits: DEFAULT_FAIRNESS_LIMITS, features overridden by `CREDIT_RISK_FAIRNESS_LIMITS`
    (JSON, e.g. `{"person_home_ownership": {"demographic_parity_difference": 0.3}}`; `{}` for a feature: none)."""
    overrides = json.loads(_env("CREDIT_RISK_FAIRNESS_LIMITS", "{}"))
    limits = {**DEFAULT_FAIRNESS_LIMITS, **overrides}
    return {feature: {metric: float(v) for metric, v in by_metric.items()} for feature, by_metric in limits.items()}


def _schedule(value: str) -> str | None:
    """`none` (any case) turns the schedule off: runs are only triggered (UI, REST API, `make run`)."""
    return None if value.strip().lower() == "none" else value


def default_drift_thresholds() -> dict[str, float]:
    """Per-feature drift thresholds: defaults by kind, overridden by `CREDIT_RISK_DRIFT_THRESHOLDS` (JSON)."""
    thresholds = {
        f.name: DEFAULT_CATEGORICAL_DRIFT if f.categorical else DEFAULT_NUMERIC_DRIFT for f in features.FEATURES
    }
    overrides = json.loads(_env("CREDIT_RISK_DRIFT_THRESHOLDS", "{}"))
    unknown = set(overrides) - set(thresholds)
    if unknown:
        raise ValueError(f"CREDIT_RISK_DRIFT_THRESHOLDS names unknown features: {sorted(unknown)}")
    return {**thresholds, **{k: float(v) for k, v in overrides.items()}}


@dataclass(frozen=True)
class Settings:
    home: Path
    ml_python: Path
    airflow_home: Path
    beam_args: tuple[str, ...]  # a DirectRunner without a running mode gets one by input size (pipeline.py)
    decision_threshold: float
    min_auc: float
    min_accuracy: float
    serving_url: str  # the gateway: clients' one address in every mode
    statsd_host: str
    statsd_port: int
    statsd_metrics_port: int = 9102  # the StatsD bridge's /metrics (statsd-exporter's port)
    prometheus_port: int = 9090
    alertmanager_port: int = 9093
    airflow_port: int = 8080  # the local Airflow's API server and UI
    airflow_host: str = "127.0.0.1"  # the address it listens on; another one exposes it (and its log servers)
    airflow_executor: str = "LocalExecutor"  # LocalExecutor | CeleryExecutor (Redis broker, `celery_workers` workers)
    celery_broker_url: str = "redis://127.0.0.1:6379/0"  # also the result backend (Celery cannot use SQLite)
    celery_workers: int = 2  # the local Airflow's `airflow celery worker` processes (concurrency 1 each)
    serving_max_body_bytes: int = 8 << 20
    serving_poll_seconds: float = 1.0
    model_server_url: str = "http://127.0.0.1:8502"  # the local model server behind the gateway
    deploy_backend: str = "local"  # local (the local model server) | docker (the compose stack's model containers)
    serving_slot_url: str = "http://model-{slot}:8501"  # docker: a model container by its compose service name
    serving_base_image: str = "tensorflow/serving:2.16.1"  # docker: the serving image's base (build arg)
    serving_image: str = "credit-risk-serving"
    retrain_schedule: str | None = "@daily"  # cron expression or preset of the retraining DAG; None: triggered only
    alert_email_to: tuple[str, ...] = ()  # recipients of the DAG's alert emails (sender: the SMTP connection)
    alert_attempts: int = 3  # tries per alert and channel (email, Slack) before the failure is logged and skipped
    alert_timeout_seconds: float = 10.0  # one try's limit: a mail server or webhook that hangs costs no more
    dataset: Path | None = None  # a copy of the Kaggle CSV to use before ../shared/data or a Kaggle download
    cache_dir: Path = Path.home() / ".cache" / "credit-risk"  # outside any checkout: Debian rootfs, private engine
    prediction_log_sample: float = 1.0  # share of predict requests the gateway logs (0: none; ids still echoed)
    prediction_log_rotate_bytes: int = 64 << 20  # a log segment past this size is closed and a new one begun
    prediction_log_retention_days: float = 30.0  # the gateway deletes log segments older than this
    prediction_log_queue: int = 100_000  # predictions waiting for the log writer; beyond, dropped and counted
    monitor_schedule: str | None = "@hourly"  # the live monitoring DAG's schedule; None: triggered only
    live_drift_retrain: bool = False  # live drift also triggers retraining when newer labelled data exists
    ml_worker: bool = True  # ML-environment calls go to the warm worker; off: each call in a fresh process
    ml_worker_idle_seconds: float = 1800.0  # an idle warm worker exits after this long (0: never; it holds ~1 GB)
    ml_worker_start_seconds: float = 300.0  # how long a call waits for a starting worker before a fresh process
    ml_worker_answer_seconds: float = 30.0  # a worker that takes a call but does not start it within this is hung
    retention_days: float = 365.0  # raw applicant data older than this is removed unless a model in use needs it
    derived_inputs: bool = True  # the model's derived inputs (tfx_modules/model.py: DERIVED_INPUTS); off: raw only
    age_bands: tuple[int, ...] = DEFAULT_AGE_BANDS  # the fairness gate's age bands (their lower edges)
    fairness_limits: dict[str, dict[str, float]] = field(default_factory=lambda: dict(DEFAULT_FAIRNESS_LIMITS))
    fairness_min_group_rows: int = 30  # examples behind a group's rate (rows, defaults, non-defaults) for it to count
    use_age: bool = True  # person_age as a model input (off: the model never sees it; the fairness gate still does)
    min_labelled: int = 200  # predictions with outcomes a version needs before its realized performance is judged
    decay_margin: float = 0.05  # realized AUC this far below the version's evaluation AUC is decay (as below min_auc)
    decay_on_estimate: bool = False  # without enough outcomes, the estimated (CBPE) AUC below its floor is decay too
    beam_multiprocess_rows: int = 200_000  # larger inputs run on the DirectRunner's multi-processing mode

    @property
    def airflow_url(self) -> str:
        """The local Airflow's UI and REST API (also its `[api] base_url`, from which tasks find the execution API)."""
        return f"http://localhost:{self.airflow_port}"

    @property
    def incoming_dir(self) -> Path:
        """New batches land here (the DAG picks them up)."""
        return self.home / "incoming"

    @property
    def accepted_dir(self) -> Path:
        """Every accepted batch, kept: the training data is the union of these."""
        return self.home / "accepted"

    @property
    def quarantine_dir(self) -> Path:
        """Rejected batches with a report of why; never deleted."""
        return self.home / "quarantine"

    @property
    def pipeline_root(self) -> Path:
        return self.home / "pipeline"

    @property
    def metadata_path(self) -> Path:
        return self.home / "metadata" / "metadata.sqlite"

    @property
    def model_dir(self) -> Path:
        """Blessed models as the Pusher writes them, TF Serving's layout: `<model_dir>/<version>/saved_model.pb`."""
        return self.home / "models" / MODEL_NAME

    @property
    def serving_dir(self) -> Path:
        """What the serving server loads; the deploy step puts a blessed version here (or bakes it in an image)."""
        return self.home / "serving" / MODEL_NAME

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def monitoring_dir(self) -> Path:
        """The local monitoring stack's storage, rendered configs, pid files and logs."""
        return self.home / "monitoring"

    def model_report(self, version: int) -> Path:
        """The evaluation report of a pushed model (HTML; a `.json` twin beside it)."""
        return self.reports_dir / f"model-{version}.html"

    def model_card(self, version: int) -> Path:
        """The model card of a pushed model (HTML; a `.json` twin beside it), beside its report."""
        return self.reports_dir / f"card-{version}.html"  # named apart from the reports (model-<version>.*)

    @property
    def retention_seconds(self) -> float:
        return self.retention_days * 86400

    @property
    def state_dir(self) -> Path:
        """Small JSON records: which batches were seen, which model is live."""
        return self.home / "state"

    @property
    def predictions_dir(self) -> Path:
        """The gateway's prediction log: JSON-lines segments, owner-only (they hold applicants' data)."""
        return self.home / "predictions"

    @property
    def live_state_dir(self) -> Path:
        """The live monitor's cursor into the prediction log, each run's window and outcome."""
        return self.state_dir / "live"

    @property
    def outcomes_dir(self) -> Path:
        """Loan outcomes: `incoming/` (dropped files), `accepted/` (each accepted file, canonical), `quarantine/`."""
        return self.home / "outcomes"

    @property
    def gateway_routes(self) -> Path:
        """Where the gateway sends requests (docker backend: the live model container), written by the deploy step."""
        return self.state_dir / "gateway.json"


def settings() -> Settings:
    home = _path("CREDIT_RISK_HOME", PROJECT_ROOT / "var")
    return Settings(
        home=home,
        ml_python=_path("CREDIT_RISK_ML_PYTHON", PROJECT_ROOT / ".venvs" / "ml" / "bin" / "python"),
        airflow_home=_path("AIRFLOW_HOME", home / "airflow"),
        beam_args=tuple(shlex.split(_env("CREDIT_RISK_BEAM_ARGS", "--runner=DirectRunner"))),
        decision_threshold=float(_env("CREDIT_RISK_DECISION_THRESHOLD", "0.5")),
        min_auc=float(_env("CREDIT_RISK_MIN_AUC", "0.80")),
        min_accuracy=float(_env("CREDIT_RISK_MIN_ACCURACY", "0.80")),
        serving_url=_env("CREDIT_RISK_SERVING_URL", "http://127.0.0.1:8501"),
        statsd_host=_env("CREDIT_RISK_STATSD_HOST", "127.0.0.1"),
        statsd_port=int(_env("CREDIT_RISK_STATSD_PORT", "8125")),
        statsd_metrics_port=int(_env("CREDIT_RISK_STATSD_METRICS_PORT", "9102")),
        prometheus_port=int(_env("CREDIT_RISK_PROMETHEUS_PORT", "9090")),
        alertmanager_port=int(_env("CREDIT_RISK_ALERTMANAGER_PORT", "9093")),
        serving_max_body_bytes=int(_env("CREDIT_RISK_SERVING_MAX_BODY_BYTES", str(8 << 20))),
        serving_poll_seconds=float(_env("CREDIT_RISK_SERVING_POLL_SECONDS", "1.0")),
        model_server_url=_env("CREDIT_RISK_MODEL_SERVER_URL", "http://127.0.0.1:8502"),
        deploy_backend=_env("CREDIT_RISK_DEPLOY_BACKEND", "local"),
        serving_slot_url=_env("CREDIT_RISK_SERVING_SLOT_URL", "http://model-{slot}:8501"),
        serving_base_image=_env("CREDIT_RISK_SERVING_BASE_IMAGE", "tensorflow/serving:2.16.1"),
        serving_image=_env("CREDIT_RISK_SERVING_IMAGE", "credit-risk-serving"),
        airflow_port=int(_env("CREDIT_RISK_AIRFLOW_PORT", "8080")),
        airflow_host=_env("CREDIT_RISK_AIRFLOW_HOST", "127.0.0.1"),
        airflow_executor=_env("AIRFLOW_EXECUTOR", "LocalExecutor"),
        celery_broker_url=_env("CREDIT_RISK_CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
        celery_workers=int(_env("CREDIT_RISK_CELERY_WORKERS", "2")),
        retrain_schedule=_schedule(_env("CREDIT_RISK_RETRAIN_SCHEDULE", "@daily")),
        alert_email_to=tuple(a.strip() for a in _env("CREDIT_RISK_ALERT_EMAIL_TO", "").split(",") if a.strip()),
        alert_attempts=max(1, int(_env("CREDIT_RISK_ALERT_ATTEMPTS", "3"))),
        alert_timeout_seconds=float(_env("CREDIT_RISK_ALERT_TIMEOUT_SECONDS", "10")),
        dataset=_path("CREDIT_RISK_DATASET", None),
        prediction_log_sample=float(_env("CREDIT_RISK_PREDICTION_LOG_SAMPLE", "1.0")),
        prediction_log_rotate_bytes=int(_env("CREDIT_RISK_PREDICTION_LOG_ROTATE_BYTES", str(64 << 20))),
        prediction_log_retention_days=float(_env("CREDIT_RISK_PREDICTION_LOG_RETENTION_DAYS", "30")),
        prediction_log_queue=int(_env("CREDIT_RISK_PREDICTION_LOG_QUEUE", "100000")),
        monitor_schedule=_schedule(_env("CREDIT_RISK_MONITOR_SCHEDULE", "@hourly")),
        live_drift_retrain=_env("CREDIT_RISK_LIVE_DRIFT_RETRAIN", "false").strip().lower() in ("1", "true", "yes"),
        cache_dir=_path("CREDIT_RISK_CACHE", Path(_env("XDG_CACHE_HOME", str(Path.home() / ".cache"))) / "credit-risk"),
        ml_worker=_env("CREDIT_RISK_ML_WORKER", "on").strip().lower() != "off",
        ml_worker_idle_seconds=float(_env("CREDIT_RISK_ML_WORKER_IDLE_SECONDS", "1800")),
        ml_worker_start_seconds=float(_env("CREDIT_RISK_ML_WORKER_START_SECONDS", "300")),
        ml_worker_answer_seconds=float(_env("CREDIT_RISK_ML_WORKER_ANSWER_SECONDS", "30")),
        retention_days=float(_env("CREDIT_RISK_RETENTION_DAYS", "365")),
        derived_inputs=_env("CREDIT_RISK_DERIVED_INPUTS", "on").strip().lower() != "off",
        age_bands=_ints(_env("CREDIT_RISK_FAIRNESS_AGE_BANDS", ",".join(map(str, DEFAULT_AGE_BANDS)))),
        fairness_limits=fairness_limits(),
        fairness_min_group_rows=int(_env("CREDIT_RISK_FAIRNESS_MIN_GROUP_ROWS", "30")),
        use_age=_env("CREDIT_RISK_USE_AGE", "on").strip().lower() != "off",
        min_labelled=int(_env("CREDIT_RISK_MIN_LABELLED", "200")),
        decay_margin=float(_env("CREDIT_RISK_DECAY_MARGIN", "0.05")),
        decay_on_estimate=_env("CREDIT_RISK_DECAY_ON_ESTIMATE", "false").strip().lower() in ("1", "true", "yes"),
        beam_multiprocess_rows=int(_env("CREDIT_RISK_BEAM_MULTIPROCESS_ROWS", "200000")),
    )
