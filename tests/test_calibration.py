"""Reliability bins and ECE (one definition for Trainer, report and benchmark), and the Trainer's blend fit."""

from __future__ import annotations

import numpy as np
import pytest

from tfx_modules.evaluation import calibration


def test_calibrated_predictions_have_a_small_error_and_overconfident_ones_a_large_one() -> None:
    rng = np.random.default_rng(0)
    probability = rng.uniform(0, 1, 200_000)
    labels = rng.uniform(0, 1, probability.size) < probability
    assert calibration.expected_calibration_error(probability, labels) < 0.005
    overconfident = np.where(probability > 0.5, 1.0, 0.0)
    assert calibration.expected_calibration_error(overconfident, labels) == pytest.approx(0.25, abs=0.005)


def test_the_error_is_the_count_weighted_gap_per_bin() -> None:
    # bin 0: predictions 0.05 and 0.05, one positive (rate 0.5); bin 9: 0.95, positive. (2 * 0.45 + 0.05) / 3
    error = calibration.expected_calibration_error([0.05, 0.05, 0.95], [0, 1, 1])
    assert error == pytest.approx((2 * 0.45 + 0.05) / 3)


def test_a_histogram_of_fine_buckets_bins_like_the_raw_predictions() -> None:
    """TFMA's calibration histogram (count, label sum, prediction sum per fine bucket) gives the raw data's ECE."""
    rng = np.random.default_rng(1)
    probability = rng.uniform(0, 1, 5000)
    labels = (rng.uniform(0, 1, probability.size) < probability**2).astype(float)
    fine = np.minimum((probability * 10_000).astype(int), 9_999)
    count = np.bincount(fine, minlength=10_000)
    filled = count > 0
    histogram = calibration.reliability(
        (np.bincount(fine, probability, 10_000)[filled] / count[filled]),
        np.bincount(fine, labels, 10_000)[filled],
        count[filled],
    )
    raw = calibration.reliability(probability, labels)
    np.testing.assert_allclose(histogram.count, raw.count)
    np.testing.assert_allclose(histogram.label, raw.label)
    np.testing.assert_allclose(histogram.prediction, raw.prediction)
    assert histogram.expected_calibration_error() == pytest.approx(raw.expected_calibration_error())


def test_platt_scaling_recovers_the_true_link_with_one_or_two_slopes_and_refuses_a_reversed_ranking() -> None:
    """A slope at or below 0 on either side would turn the trees' monotone logit into a score that falls as risk
    rises."""
    from tfx_modules.model import fit_platt

    rng = np.random.default_rng(2)
    logit = rng.normal(0, 2, 50_000)

    def labels(true_logit: np.ndarray) -> np.ndarray:
        return (rng.uniform(0, 1, logit.size) < 1 / (1 + np.exp(-true_logit))).astype(int)

    one = fit_platt(labels(0.5 * logit - 1), logit)
    assert one.slope == pytest.approx(0.5, abs=0.03) and one.intercept == pytest.approx(-1, abs=0.05)
    assert one.upper_slope == pytest.approx(0, abs=0.05)
    two = fit_platt(labels(1.2 * logit - 0.8 * np.maximum(logit, 0) - 1), logit)
    assert two.slope == pytest.approx(1.2, abs=0.08) and two.upper_slope == pytest.approx(-0.8, abs=0.08)
    with pytest.raises(ValueError, match="slope"):
        fit_platt(labels(0.5 * logit - 1), -logit)
