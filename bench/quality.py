"""What the quality benchmarks share: loan_percent_income as an intake system computes it, and the metrics table."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp
from sklearn.metrics import accuracy_score, average_precision_score, brier_score_loss, roc_auc_score

from common import features
from tfx_modules.evaluation import calibration

METRICS = ("roc_auc", "pr_auc", "accuracy", "expected_calibration_error", "ks", "brier", "exactly_0_or_1")


def recompute(frame: pd.DataFrame) -> pd.DataFrame:
    """`loan_percent_income` as an intake system computes it (common/features.py: RATIO_DECIMALS)."""
    ratio = (frame["loan_amnt"] / frame["person_income"]).round(features.RATIO_DECIMALS)
    return frame.assign(loan_percent_income=ratio)


def scores(y: np.ndarray, probability: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """METRICS of probabilities against 0/1 labels; KS is the largest gap between the score distributions of
    defaults and repayments."""
    return {
        "roc_auc": round(float(roc_auc_score(y, probability)), 4),
        "pr_auc": round(float(average_precision_score(y, probability)), 4),
        "accuracy": round(float(accuracy_score(y, probability >= threshold)), 4),
        "expected_calibration_error": round(calibration.expected_calibration_error(probability, y), 4),
        "ks": round(float(ks_2samp(probability[y == 1], probability[y == 0]).statistic), 4),
        "brier": round(float(brier_score_loss(y, probability)), 4),
        "exactly_0_or_1": int(((probability == 0) | (probability == 1)).sum()),
    }
