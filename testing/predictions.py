"""Logged predictions written as the gateway writes them, for tests and benchmarks of the live monitor and the
outcome join that need a prediction log without running a gateway."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import config, features
from serving import metrics
from serving.prediction_log import Call, PredictionLog


def log_rows(
    home: Path,
    frame: pd.DataFrame,
    scores: np.ndarray,
    version: int,
    ids: list[str] | None = None,
    at: float | None = None,
) -> None:
    """Write `frame` as logged predictions of `version` (as the gateway would) into `home`'s prediction log, with
    application ids `ids` (default `app-<i>`), logged at Unix time `at` (default now)."""
    log = PredictionLog(home / "predictions", metrics.Registry(), capacity=len(frame) + 1)
    log.start()
    instances = frame[list(features.FEATURE_NAMES)].to_dict("records")
    for i, (row, score) in enumerate(zip(instances, scores, strict=True)):
        log.submit(
            Call(
                time.time() if at is None else at,
                f"bench-{i}",
                config.MODEL_NAME,
                version,
                3.0,
                [f"app-{i}" if ids is None else ids[i]],
                [row],
                [{"probability": float(score), "label": int(score >= 0.5)}],
            )
        )
    log.stop()
