"""How well a model's scores separate defaults, from realized outcomes or, before they arrive, from the scores alone.

Realized: ROC-AUC, PR-AUC (average precision), accuracy of the served labels, KS (the largest gap between the
defaulters' and the repayers' cumulative score distributions) and Gini (2 AUC - 1), the credit conventions, and
calibration (predicted against observed default rate by score decile; the expected calibration error as the model
report defines it, tfx_modules/evaluation/calibration.py).

Estimated: confidence-based performance estimation (CBPE, as NannyML does it). With calibrated probabilities a
prediction of p is a default with probability p, so the expected confusion matrix at each threshold is the sum of p
(true positives) and of 1 - p (false positives) over the predictions above it: the expected ROC curve, its AUC and
the expected accuracy follow without a label. The model is Platt-calibrated inside its SavedModel
(tfx_modules/evaluation/calibration.py); the realized ECE says how far that holds. NumPy only: nannyml needs
pandas >= 2, which
the ML environment's TFX pins cannot take.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tfx_modules.evaluation import calibration

DECILES = 10


def _curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative positive and negative weight above each distinct score, highest score first (ties together)."""
    order = np.argsort(-scores, kind="mergesort")
    ranked, weight = scores[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]  # the last index of each distinct score
    return np.cumsum(weight)[last], np.cumsum(1.0 - weight)[last]


def _auc(tps: np.ndarray, fps: np.ndarray) -> float:
    """Area under the ROC curve through (0, 0) and each (fps, tps) point, ties as straight segments."""
    tpr, fpr = np.r_[0.0, tps / tps[-1]], np.r_[0.0, fps / fps[-1]]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def deciles(probability: np.ndarray, outcome: np.ndarray) -> list[dict[str, float]]:
    """Per score decile (equal counts, lowest scores first) the mean predicted and the observed default rate."""
    order = np.argsort(probability, kind="mergesort")
    found = []
    for part in np.array_split(order, min(DECILES, len(order))):
        predicted, observed = float(probability[part].mean()), float(outcome[part].mean())
        found.append({"count": len(part), "predicted": predicted, "observed": observed})
    return found


def realized(probability: np.ndarray, label: np.ndarray, outcome: np.ndarray) -> dict[str, Any] | None:
    """The realized figures of scored predictions with their outcomes (1: default); None unless both occur."""
    probability, label, outcome = np.asarray(probability, float), np.asarray(label), np.asarray(outcome, float)
    positives = outcome.sum()
    if len(outcome) == 0 or positives in (0, len(outcome)):
        return None
    tps, fps = _curve(probability, outcome)
    auc = _auc(tps, fps)
    precision = tps / (tps + fps)
    recall = tps / positives
    return {
        "count": len(outcome),
        "default_rate": float(positives / len(outcome)),
        "auc": auc,
        "pr_auc": float(np.sum(np.diff(np.r_[0.0, recall]) * precision)),
        "accuracy": float(np.mean(label == outcome)),
        "ks": float(np.max(tps / tps[-1] - fps / fps[-1])),
        "gini": 2 * auc - 1,
        "ece": calibration.expected_calibration_error(probability, outcome),  # the model report's definition
        "deciles": deciles(probability, outcome),
    }


def estimated(probability: np.ndarray, label: np.ndarray) -> dict[str, Any] | None:
    """CBPE: the expected AUC, accuracy and default rate of calibrated predictions whose outcomes are not known."""
    probability, label = np.asarray(probability, float), np.asarray(label)
    if len(probability) == 0:
        return None
    tps, fps = _curve(probability, probability)
    return {
        "count": len(probability),
        "default_rate": float(probability.mean()),
        "auc": _auc(tps, fps),
        "accuracy": float(np.mean(np.where(label == 1, probability, 1 - probability))),
    }


def _wins(scores: np.ndarray, others: np.ndarray) -> np.ndarray:
    """For each score, the share of `others` below it, ties counted half."""
    ranked = np.sort(others)
    below, upto = np.searchsorted(ranked, scores, "left"), np.searchsorted(ranked, scores, "right")
    return (below + 0.5 * (upto - below)) / len(ranked)


def delong(champion: np.ndarray, challenger: np.ndarray, outcome: np.ndarray) -> dict[str, Any] | None:
    """Each model's realized ROC-AUC on the same applicants and DeLong's paired test of their difference
    (DeLong, DeLong and Clarke-Pearson 1988): the z statistic and its two-sided p-value. None unless both
    outcomes occur."""
    outcome = np.asarray(outcome, float)
    positive = outcome == 1
    n1, n0 = int(positive.sum()), int((~positive).sum())
    if n1 == 0 or n0 == 0:
        return None
    v10, v01 = [], []
    for scores in (np.asarray(champion, float), np.asarray(challenger, float)):
        pos, neg = scores[positive], scores[~positive]  # in the same applicant order for both models
        v10.append(_wins(pos, neg))  # per defaulter: the share of repayers it outranks
        v01.append(1.0 - _wins(neg, pos))  # per repayer: the share of defaulters that outrank it
    auc = [float(v.mean()) for v in v10]
    s10, s01 = (
        np.cov(np.vstack(v10)) if n1 > 1 else np.zeros((2, 2)),
        np.cov(np.vstack(v01)) if n0 > 1 else np.zeros((2, 2)),
    )
    variance = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / n1 + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n0
    diff = auc[0] - auc[1]
    z = diff / math.sqrt(variance) if variance > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    return {
        "count": n1 + n0,
        "defaults": n1,
        "auc_champion": auc[0],
        "auc_challenger": auc[1],
        "z": float(z),
        "p_value": float(math.erfc(abs(z) / math.sqrt(2))),
    }
