"""Evaluation and explanation: calibration, fairness metrics, reason codes, SavedModel calls."""
