"""How well predicted probabilities match observed default rates: reliability bins and the expected calibration error.

One definition for the Trainer (members on the eval split), the model report (TFMA's calibration histogram) and the
benchmark (the held-out rows): ten equal-width bins of the prediction; ECE is the count-weighted mean gap between a
bin's mean prediction and its observed rate. NumPy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BINS = 10


@dataclass(frozen=True)
class Reliability:
    """Per bin: how many examples, their label sum and their prediction sum."""

    count: np.ndarray
    label: np.ndarray
    prediction: np.ndarray

    @property
    def filled(self) -> np.ndarray:
        return self.count > 0

    def expected_calibration_error(self) -> float:
        return float(np.abs(self.label - self.prediction).sum() / self.count.sum())


def reliability(predictions, labels, counts=None) -> Reliability:
    """Bin `predictions` (mean prediction per item) with their `labels` (label sum per item) and `counts` (examples
    per item, 1 by default): raw examples, or the fine buckets of a histogram such as TFMA's."""
    predictions = np.asarray(predictions, dtype=float)
    counts = np.ones_like(predictions) if counts is None else np.asarray(counts, dtype=float)
    index = np.clip((predictions * BINS).astype(int), 0, BINS - 1)
    return Reliability(
        count=np.bincount(index, counts, BINS),
        label=np.bincount(index, np.asarray(labels, dtype=float), BINS),
        prediction=np.bincount(index, predictions * counts, BINS),
    )


def expected_calibration_error(predictions, labels) -> float:
    """ECE of raw predictions against 0/1 labels."""
    return reliability(predictions, labels).expected_calibration_error()
