"""Live traffic against the serving model's training data: is the window's input, or its score, different?

Per feature two measures, on the features as the model sees them (`validation.model_view`): TFDV's distance
(Jensen-Shannon numeric, L-infinity categorical: `validation.drift`, the batch gate's own) and the CSI over the
training data's decile bins (categories: the vocabulary and one bin for anything else; missing values their own
bin). The score: PSI of the predicted probability against the model's eval split, over the eval scores' deciles.
PSI/CSI bands: below 0.10 stable, 0.10-0.25 moderate, above 0.25 significant.

Thresholds respect the window's size. A measure flags drift only above both its base threshold (TFDV's from the
configuration or the run's params, the upper PSI band) and its noise level at this sample size: the null
distribution of each measure is computed on RESAMPLES random draws of n rows from the training data (eval scores
for the score), with n the largest calibration size not above the window's (a smaller n is noisier, so the
threshold is conservative). A gamma distribution fitted to each null sample (moments) gives the quantile that keeps
the family of 2 x features + 1 tests, Bonferroni-corrected, below the false-alarm rate (1 %). Null samples are
cached per model version and size. ML environment (TFDV, pandas, scipy).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from common import features
from common.config import default_drift_thresholds
from tfx_modules.data_gate import validation

if TYPE_CHECKING:
    from tensorflow_metadata.proto.v0 import statistics_pb2

PSI_BANDS = (0.10, 0.25)
RESAMPLES = 100
SIZES = tuple(round(50 * 2 ** (k / 2)) for k in range(16))  # 50, 71, 100, ... 9051: calibration sizes
EPSILON = 1e-4  # share given to an empty bin, so PSI stays finite
SCORE = "score"


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins."""
    e, a = np.clip(expected, EPSILON, None), np.clip(actual, EPSILON, None)
    return float(np.sum((a - e) * np.log(a / e)))


def band(value: float) -> str:
    return "stable" if value < PSI_BANDS[0] else "moderate" if value < PSI_BANDS[1] else "significant"


@dataclass(frozen=True)
class Bins:
    """Decile bins of a reference sample: numeric edges (NaN the last bin) or categories (anything else last)."""

    edges: np.ndarray | None
    categories: tuple[str, ...]

    @classmethod
    def of(cls, reference: pd.Series, categorical: bool, vocabulary: tuple[str, ...] = ()) -> Bins:
        if categorical:
            return cls(None, vocabulary)
        values = reference.dropna().to_numpy(dtype=float)
        return cls(np.unique(np.quantile(values, np.linspace(0, 1, 11))[1:-1]), ())

    @property
    def size(self) -> int:
        return len(self.categories) + 1 if self.edges is None else len(self.edges) + 2

    def index(self, values: pd.Series) -> np.ndarray:
        if self.edges is None:
            codes = pd.Categorical(values.astype(str), categories=list(self.categories)).codes
            return np.where(codes < 0, len(self.categories), codes)
        numbers = values.to_numpy(dtype=float)
        return np.where(np.isnan(numbers), len(self.edges) + 1, np.searchsorted(self.edges, numbers, side="right"))

    def shares(self, index: np.ndarray) -> np.ndarray:
        return np.bincount(index, minlength=self.size) / max(len(index), 1)


@dataclass
class Baseline:
    """What live traffic is compared with: a model version's training rows and statistics, its eval scores."""

    version: int
    view: pd.DataFrame  # the training rows as the model sees them
    raw: pd.DataFrame  # the same rows as logged (for the live-vs-training summaries)
    statistics: statistics_pb2.DatasetFeatureStatisticsList  # TFDV statistics of `view`
    scores: np.ndarray
    folder: Path  # where null samples are cached

    def __post_init__(self) -> None:
        self.bins = {f.name: Bins.of(self.view[f.name], f.categorical, f.vocabulary) for f in features.FEATURES}
        self.bins[SCORE] = Bins.of(pd.Series(self.scores), False)
        self.index = {f.name: self.bins[f.name].index(self.view[f.name]) for f in features.FEATURES}
        self.expected = {name: bins.shares(self.index[name]) for name, bins in self.bins.items() if name != SCORE}
        self.expected[SCORE] = self.bins[SCORE].shares(self.bins[SCORE].index(pd.Series(self.scores)))


def calibration_size(n: int) -> int:
    return max([s for s in SIZES if s <= n] or [SIZES[0]])


def null_sample(baseline: Baseline, size: int, seed: int = 0) -> dict[str, list[float]]:
    """Each measure on RESAMPLES draws of `size` training rows (eval scores) without drift, cached on disk."""
    cache = baseline.folder / f"live_null_{size}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    import tensorflow_data_validation as tfdv

    rng = np.random.default_rng(seed)
    limits = default_drift_thresholds()
    values: dict[str, list[float]] = {}
    score_index = baseline.bins[SCORE].index(pd.Series(baseline.scores))
    for _ in range(RESAMPLES):
        rows = rng.integers(0, len(baseline.view), size)
        stats = tfdv.generate_statistics_from_dataframe(baseline.view.iloc[rows])
        for name, found in validation.drift(stats, baseline.statistics, limits).items():
            values.setdefault(f"tfdv:{name}", []).append(found["value"])
        for f in features.FEATURES:
            shares = baseline.bins[f.name].shares(baseline.index[f.name][rows])
            values.setdefault(f"csi:{f.name}", []).append(psi(baseline.expected[f.name], shares))
        scores = score_index[rng.integers(0, len(score_index), size)]
        values.setdefault(f"psi:{SCORE}", []).append(psi(baseline.expected[SCORE], baseline.bins[SCORE].shares(scores)))
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(values))
    return values


def null_threshold(sample: list[float], alpha: float) -> float:
    """The (1 - alpha) quantile of a gamma distribution with the sample's mean and variance (never below its max)."""
    from scipy import stats

    values = np.asarray(sample, dtype=float)
    mean, var = float(values.mean()), float(values.var(ddof=1))
    if mean <= 0 or var <= 0:
        return float(values.max())
    quantile = stats.gamma.ppf(1 - alpha, mean**2 / var, scale=var / mean)
    return float(max(quantile, values.max()))


def _summary(spec: features.Feature, live: pd.Series, training: pd.Series) -> dict[str, Any]:
    """Live against training for the report and the dashboard: means (numeric) or category shares."""
    if spec.categorical:

        def shares(values: pd.Series) -> dict[str, float]:
            counts = values.value_counts(normalize=True)
            return {c: round(float(counts.get(c, 0.0)), 4) for c in spec.vocabulary}

        return {"live_shares": shares(live), "training_shares": shares(training)}
    return {"live_mean": float(live.astype(float).mean()), "training_mean": float(training.astype(float).mean())}


def assess(
    window: pd.DataFrame,
    baseline: Baseline,
    *,
    thresholds: dict[str, float] | None = None,
    psi_alert: float = PSI_BANDS[1],
    false_alarm_rate: float = 0.01,
) -> dict[str, Any]:
    """Per feature and for the score: measures, effective thresholds, drifted or not. `window` holds one row per
    prediction with the feature columns and `probability`."""
    limits = {**default_drift_thresholds(), **(thresholds or {})}
    size = calibration_size(len(window))
    nulls = null_sample(baseline, size)
    alpha = false_alarm_rate / (2 * len(features.FEATURES) + 1)
    view = validation.model_view(window)
    distances = validation.drift(validation.drift_statistics(window), baseline.statistics, limits)
    result: dict[str, Any] = {"features": {}, "calibration_size": size, "alpha_per_test": alpha}
    for spec in features.FEATURES:
        tfdv_found = distances[spec.name]
        tfdv_limit = max(limits[spec.name], null_threshold(nulls[f"tfdv:{spec.name}"], alpha))
        csi = psi(
            baseline.expected[spec.name],
            baseline.bins[spec.name].shares(baseline.bins[spec.name].index(view[spec.name])),
        )
        csi_limit = max(psi_alert, null_threshold(nulls[f"csi:{spec.name}"], alpha))
        result["features"][spec.name] = {
            "measure": tfdv_found["measure"],
            "value": tfdv_found["value"],
            "base_threshold": limits[spec.name],
            "threshold": tfdv_limit,
            "csi": csi,
            "csi_band": band(csi),
            "csi_threshold": csi_limit,
            "drifted": tfdv_found["value"] > tfdv_limit or csi > csi_limit,
            **_summary(spec, window[spec.name], baseline.raw[spec.name]),
        }
    scores = window["probability"].astype(float)
    score_psi = psi(baseline.expected[SCORE], baseline.bins[SCORE].shares(baseline.bins[SCORE].index(scores)))
    score_limit = max(psi_alert, null_threshold(nulls[f"psi:{SCORE}"], alpha))
    result[SCORE] = {
        "psi": score_psi,
        "band": band(score_psi),
        "threshold": score_limit,
        "drifted": score_psi > score_limit,
        "live_mean": float(scores.mean()),
        "eval_mean": float(np.mean(baseline.scores)),
    }
    result["drifted"] = [name for name, d in result["features"].items() if d["drifted"]]
    if result[SCORE]["drifted"]:
        result["drifted"].append(SCORE)
    return result
