"""Where state lives: everything under CREDIT_RISK_HOME, owner-only, and how long raw data is kept."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.config import environment
from common.config.environment import MODEL_NAME


@dataclass(frozen=True, kw_only=True)
class Storage:
    home: Path
    dataset: Path | None = None  # a copy of the Kaggle CSV to use before ../shared/data or a Kaggle download
    cache_dir: Path = Path.home() / ".cache" / "credit-risk"  # outside any checkout: Debian rootfs, private engine
    retention_days: float = 365.0  # raw applicant data older than this is removed unless a model in use needs it

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

    @property
    def rollout_state(self) -> Path:
        """The rollout under way or last ended (serving/rollout.py): written by its controller and the gateway, so in
        a folder of its own (the compose stack's gateway mounts only it and the prediction log writable)."""
        return self.home / "rollout" / "rollout.json"


def from_environment(home: Path) -> dict:
    """This area's settings from the environment, each with its default."""
    return dict(
        home=home,
        dataset=environment.path("CREDIT_RISK_DATASET", None),
        cache_dir=environment.path(
            "CREDIT_RISK_CACHE", Path(environment.text("XDG_CACHE_HOME", str(Path.home() / ".cache"))) / "credit-risk"
        ),
        retention_days=float(environment.text("CREDIT_RISK_RETENTION_DAYS", "365")),
    )
