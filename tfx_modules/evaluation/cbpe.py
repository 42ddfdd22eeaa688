"""Confidence-based performance estimation (CBPE) in plain Python: the ROC-AUC calibrated scores imply without labels.

With calibrated probabilities a prediction of p is a default with probability p, so each prediction counts p as a
positive and 1 - p as a negative: the expected ROC curve and its area follow from the scores alone. The same
estimate as outcomes/performance.py's `estimated` (NumPy, for the monitoring run), kept free of NumPy so the
gateway can judge a rollout from either environment (the Airflow one has no NumPy).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby


def expected_auc(probabilities: Sequence[float]) -> float | None:
    """The CBPE ROC-AUC of calibrated default probabilities; None when they imply no positive or no negative."""
    total_pos = sum(probabilities)
    total_neg = len(probabilities) - total_pos
    if total_pos <= 0 or total_neg <= 0:
        return None
    area = tp = fp = 0.0
    for _, tied in groupby(sorted(probabilities, reverse=True)):  # ties as one straight segment
        group = list(tied)
        d_tp, d_fp = sum(group), sum(1.0 - p for p in group)
        area += d_fp * (tp + d_tp / 2)
        tp, fp = tp + d_tp, fp + d_fp
    return area / (total_pos * total_neg)
