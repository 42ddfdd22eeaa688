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
    serving_grpc_port: int = 8500  # `make up`: the gateway's gRPC side on the serving URL's host (as compose's 8500)
    model_server_grpc_port: int = 8503  # `make up`: the local model server's gRPC side, behind the gateway's
    deploy_backend: str = "local"  # local (the local model server) | docker (the compose stack's model containers)
    serving_slot_url: str = "http://model-{slot}:8501"  # docker: a model container by its compose service name
    serving_base_image: str = "tensorflow/serving:2.16.1"  # docker: the serving image's base (build arg)
    serving_image: str = "credit-risk-serving"
    prediction_log_sample: float = 1.0  # share of predict requests the gateway logs (0: none; ids still echoed)
    prediction_log_rotate_bytes: int = 64 << 20  # a log segment past this size is closed and a new one begun
    prediction_log_retention_days: float = 30.0  # the gateway deletes log segments older than this
    prediction_log_queue: int = 100_000  # predictions waiting for the log writer; beyond, dropped and counted
    # Rollouts (serving/rollout.py, docs/rollouts.md has the rationale and the null-case calibration).
    rollout_stages: tuple[str, ...] = ("shadow", "canary")  # or ("direct",): today's swap
    rollout_shadow_requests: int = 300  # paired predictions the shadow stage waits for
    rollout_canary_steps: tuple[int, ...] = (5, 25, 100)  # percent of applicants the challenger answers, per step
    rollout_step_requests: int = 200  # requests through the gateway per canary step
    rollout_stage_seconds: float = 600.0  # a stage short of its requests after this long ends in a verdict
    rollout_shadow_share: float = 1.0  # share of requests mirrored to the challenger in shadow
    # Breach limits, calibrated on the null case (bench/results/rollout.json, docs/rollouts.md): models retrained on
    # the champion's rows with other train seeds reach PSI 0.19 at 150 pairs and 0.10 at 200, flip up to 4 % of
    # decisions and differ by mean |diff| up to 0.03; income in a unit ten times smaller gives PSI 1.06 and more, 10 %
    # flipped and mean |diff| 0.16 and more at every count from 50 pairs. Below 200 pairs, PSI on ten bins is mostly
    # sampling noise (0.72 at 50 pairs for a same-rows retrain).
    rollout_max_psi: float = 0.25  # PSI of the challenger's scores against the champion's (0.25: the credit rule)
    rollout_max_flip_share: float = 0.1  # share of paired decisions that differ at the model's threshold
    rollout_max_mean_abs_diff: float = 0.08  # mean |p_challenger - p_champion| over the pairs
    rollout_max_auc_drop: float = 0.05  # CBPE-estimated ROC-AUC of the challenger below the champion's
    rollout_max_error_ratio: float = 0.02  # challenger errors per request, above the champion's own ratio
    rollout_min_errors: int = 3  # errors needed before the error ratio can breach (one blip is not a verdict)
    rollout_max_latency_ratio: float = 3.0  # challenger p99 over champion p99 ...
    rollout_min_latency_ms: float = 50.0  # ... and at least this much slower, so sub-millisecond jitter never trips
    rollout_min_pairs: int = 200  # paired predictions needed before the score comparison can breach


def from_environment() -> dict:
    """This area's settings from the environment, each with its default."""
    return dict(
        serving_url=environment.text("CREDIT_RISK_SERVING_URL", "http://127.0.0.1:8501"),
        serving_max_body_bytes=int(environment.text("CREDIT_RISK_SERVING_MAX_BODY_BYTES", str(8 << 20))),
        serving_poll_seconds=float(environment.text("CREDIT_RISK_SERVING_POLL_SECONDS", "1.0")),
        model_server_url=environment.text("CREDIT_RISK_MODEL_SERVER_URL", "http://127.0.0.1:8502"),
        serving_grpc_port=int(environment.text("CREDIT_RISK_SERVING_GRPC_PORT", "8500")),
        model_server_grpc_port=int(environment.text("CREDIT_RISK_MODEL_SERVER_GRPC_PORT", "8503")),
        deploy_backend=environment.text("CREDIT_RISK_DEPLOY_BACKEND", "local"),
        serving_slot_url=environment.text("CREDIT_RISK_SERVING_SLOT_URL", "http://model-{slot}:8501"),
        serving_base_image=environment.text("CREDIT_RISK_SERVING_BASE_IMAGE", "tensorflow/serving:2.16.1"),
        serving_image=environment.text("CREDIT_RISK_SERVING_IMAGE", "credit-risk-serving"),
        prediction_log_sample=float(environment.text("CREDIT_RISK_PREDICTION_LOG_SAMPLE", "1.0")),
        prediction_log_rotate_bytes=int(environment.text("CREDIT_RISK_PREDICTION_LOG_ROTATE_BYTES", str(64 << 20))),
        prediction_log_retention_days=float(environment.text("CREDIT_RISK_PREDICTION_LOG_RETENTION_DAYS", "30")),
        prediction_log_queue=int(environment.text("CREDIT_RISK_PREDICTION_LOG_QUEUE", "100000")),
        rollout_stages=tuple(environment.text("CREDIT_RISK_ROLLOUT_STAGES", "shadow,canary").split(",")),
        rollout_shadow_requests=int(environment.text("CREDIT_RISK_ROLLOUT_SHADOW_REQUESTS", "300")),
        rollout_canary_steps=environment.ints(environment.text("CREDIT_RISK_ROLLOUT_CANARY_STEPS", "5,25,100")),
        rollout_step_requests=int(environment.text("CREDIT_RISK_ROLLOUT_STEP_REQUESTS", "200")),
        rollout_stage_seconds=float(environment.text("CREDIT_RISK_ROLLOUT_STAGE_SECONDS", "600")),
        rollout_shadow_share=float(environment.text("CREDIT_RISK_ROLLOUT_SHADOW_SHARE", "1.0")),
    )
