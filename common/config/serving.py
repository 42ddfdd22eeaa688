"""The gateway, the model server behind it, how a model is deployed, and the prediction log."""

from __future__ import annotations

from dataclasses import dataclass

from common.config import environment


@dataclass(frozen=True, kw_only=True)
class Serving:
    serving_url: str  # the gateway: clients' one address in every mode
    serving_max_body_bytes: int = 8 << 20
    serving_poll_seconds: float = 1.0
    model_server_url: str = "http://127.0.0.1:8502"  # the local model server behind the gateway
    deploy_backend: str = "local"  # local (the local model server) | docker (the compose stack's model containers)
    serving_slot_url: str = "http://model-{slot}:8501"  # docker: a model container by its compose service name
    serving_base_image: str = "tensorflow/serving:2.16.1"  # docker: the serving image's base (build arg)
    serving_image: str = "credit-risk-serving"
    prediction_log_sample: float = 1.0  # share of predict requests the gateway logs (0: none; ids still echoed)
    prediction_log_rotate_bytes: int = 64 << 20  # a log segment past this size is closed and a new one begun
    prediction_log_retention_days: float = 30.0  # the gateway deletes log segments older than this
    prediction_log_queue: int = 100_000  # predictions waiting for the log writer; beyond, dropped and counted


def from_environment() -> dict:
    """This area's settings from the environment, each with its default."""
    return dict(
        serving_url=environment.text("CREDIT_RISK_SERVING_URL", "http://127.0.0.1:8501"),
        serving_max_body_bytes=int(environment.text("CREDIT_RISK_SERVING_MAX_BODY_BYTES", str(8 << 20))),
        serving_poll_seconds=float(environment.text("CREDIT_RISK_SERVING_POLL_SECONDS", "1.0")),
        model_server_url=environment.text("CREDIT_RISK_MODEL_SERVER_URL", "http://127.0.0.1:8502"),
        deploy_backend=environment.text("CREDIT_RISK_DEPLOY_BACKEND", "local"),
        serving_slot_url=environment.text("CREDIT_RISK_SERVING_SLOT_URL", "http://model-{slot}:8501"),
        serving_base_image=environment.text("CREDIT_RISK_SERVING_BASE_IMAGE", "tensorflow/serving:2.16.1"),
        serving_image=environment.text("CREDIT_RISK_SERVING_IMAGE", "credit-risk-serving"),
        prediction_log_sample=float(environment.text("CREDIT_RISK_PREDICTION_LOG_SAMPLE", "1.0")),
        prediction_log_rotate_bytes=int(environment.text("CREDIT_RISK_PREDICTION_LOG_ROTATE_BYTES", str(64 << 20))),
        prediction_log_retention_days=float(environment.text("CREDIT_RISK_PREDICTION_LOG_RETENTION_DAYS", "30")),
        prediction_log_queue=int(environment.text("CREDIT_RISK_PREDICTION_LOG_QUEUE", "100000")),
    )
