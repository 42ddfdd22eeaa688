"""Group fairness of a model's decisions: per-group metrics and fairlearn's between-group differences.

Definitions follow fairlearn (metrics.demographic_parity_difference, metrics.equalized_odds_difference, with the
default `method="between_groups"`): the demographic-parity difference is the largest minus the smallest positive
(selection) rate across the groups of a sensitive feature; the equalized-odds difference is the larger of the same
spread of true-positive rates and of false-positive rates. fairlearn itself is not a dependency: every release needs
pandas >= 2, and the ML environment pins the pandas TFX 1.16 needs (1.5.3). NumPy and scikit-learn only.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

AGE = "person_age"
AGE_BAND = "age_band"
HOME = "person_home_ownership"
DEMOGRAPHIC_PARITY = "demographic_parity_difference"
EQUALIZED_ODDS = "equalized_odds_difference"
DIFFERENCES = (DEMOGRAPHIC_PARITY, EQUALIZED_ODDS)


def age_bands(ages: np.ndarray, edges: Sequence[int]) -> np.ndarray:
    """Each age's band name: edges (25, 35, 50) make <25, 25-34, 35-49, 50+."""
    names = band_names(edges)
    return np.array(names, dtype=object)[np.searchsorted(np.asarray(edges), np.asarray(ages), side="right")]


def band_names(edges: Sequence[int]) -> list[str]:
    inner = [f"{low}-{high - 1}" for low, high in itertools.pairwise(edges)]
    return [f"<{edges[0]}", *inner, f"{edges[-1]}+"]


@dataclass(frozen=True)
class GroupMetrics:
    group: str
    count: int
    positives: int  # defaults in the group (label 1)
    auc: float | None  # None where the group holds one class
    positive_rate: float  # share the model predicts to default (fairlearn's selection rate)
    true_positive_rate: float | None
    false_positive_rate: float | None


def group_metrics(group: str, labels: np.ndarray, scores: np.ndarray, threshold: float) -> GroupMetrics:
    predicted = scores >= threshold
    positives, negatives = labels == 1, labels == 0
    return GroupMetrics(
        group=group,
        count=len(labels),
        positives=int(positives.sum()),
        auc=float(roc_auc_score(labels, scores)) if positives.any() and negatives.any() else None,
        positive_rate=float(predicted.mean()),
        true_positive_rate=float(predicted[positives].mean()) if positives.any() else None,
        false_positive_rate=float(predicted[negatives].mean()) if negatives.any() else None,
    )


# The examples behind each rate: a group counts in a rate's spread only with `min_count` of them.
BEHIND = {
    "positive_rate": lambda g: g.count,
    "true_positive_rate": lambda g: g.positives,
    "false_positive_rate": lambda g: g.count - g.positives,
}


def _spread(groups: list[GroupMetrics], rate: str, min_count: int) -> tuple[float, str, str]:
    """max - min of a rate across the groups with at least `min_count` examples behind it (rows for the positive
    rate, defaults for the true-positive rate, non-defaults for the false-positive rate: four defaults make a
    true-positive rate of 0.25 steps), with the groups at the two ends (highest first)."""
    defined = [g for g in groups if getattr(g, rate) is not None and BEHIND[rate](g) >= min_count]
    if len(defined) < 2:
        return 0.0, "", ""
    high = max(defined, key=lambda g: getattr(g, rate))
    low = min(defined, key=lambda g: getattr(g, rate))
    return getattr(high, rate) - getattr(low, rate), high.group, low.group


@dataclass(frozen=True)
class Difference:
    metric: str
    value: float
    groups: tuple[str, str]  # the groups at the two ends of the spread (highest rate first)
    rate: str  # the rate whose spread it is


def differences(groups: list[GroupMetrics], min_count: int) -> list[Difference]:
    """fairlearn's demographic-parity and equalized-odds differences between `groups`."""
    parity = _spread(groups, "positive_rate", min_count)
    odds_rate, odds = max(
        ((rate, _spread(groups, rate, min_count)) for rate in ("true_positive_rate", "false_positive_rate")),
        key=lambda pair: pair[1][0],
    )
    return [
        Difference(DEMOGRAPHIC_PARITY, parity[0], parity[1:], "positive_rate"),
        Difference(EQUALIZED_ODDS, odds[0], odds[1:], odds_rate),
    ]


@dataclass(frozen=True)
class Table:
    """Per sensitive feature: its groups' metrics and the differences between them."""

    groups: dict[str, list[GroupMetrics]]
    differences: dict[str, list[Difference]]

    def to_dict(self) -> dict:
        return {
            "groups": {k: [asdict(g) for g in v] for k, v in self.groups.items()},
            "differences": {k: [asdict(d) for d in v] for k, v in self.differences.items()},
        }


def table(
    labels: np.ndarray,
    scores: np.ndarray,
    sensitive: dict[str, np.ndarray],
    threshold: float,
    min_count: int,
    order: dict[str, Sequence[str]] | None = None,
) -> Table:
    """Metrics per group of each sensitive feature, groups in `order` where given (else sorted); a group with fewer
    than `min_count` examples behind a rate is reported but left out of that rate's spread: a handful of rows makes
    any rate swing."""
    groups, diffs = {}, {}
    for feature, values in sensitive.items():
        present = set(values.tolist())
        names = [g for g in (order or {}).get(feature, sorted(present)) if g in present]
        metrics = [
            group_metrics(str(name), labels[values == name], scores[values == name], threshold) for name in names
        ]
        groups[feature] = metrics
        diffs[feature] = differences(metrics, min_count)
    return Table(groups, diffs)


@dataclass(frozen=True)
class Violation:
    metric: str
    feature: str
    group: str  # the group with the highest rate: the one the model refuses most
    other: str  # the group at the other end of the spread
    value: float
    limit: float

    @property
    def line(self) -> str:
        """`<metric> <feature>=<group> <value> > <limit>`, the outcome line's tail."""
        return f"{self.metric} {self.feature}={self.group} {self.value:.3f} > {self.limit:.3f}"

    @property
    def detail(self) -> str:
        """For people: which groups, and how far over the limit."""
        return (
            f"{self.metric} of {self.feature} is {self.value:.3f}, {self.value - self.limit:.3f} over the limit "
            f"{self.limit:.3f}: group {self.group} against group {self.other}"
        )


def violations(fairness: Table, feature: str, limits: dict[str, float]) -> list[Violation]:
    """The differences of `feature`'s groups over their limits (metric -> limit), the most refused group first."""
    return [
        Violation(diff.metric, feature, diff.groups[0], diff.groups[1], diff.value, limits[diff.metric])
        for diff in fairness.differences.get(feature, [])
        if diff.metric in limits and diff.value > limits[diff.metric]
    ]
