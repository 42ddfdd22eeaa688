"""Realized figures against scikit-learn's, and CBPE's estimate against the realized AUC of calibrated scores of real
loans (a logistic regression fitted on other real rows: calibrated by its loss, as the served model is by Platt)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from common import features
from outcomes import performance
from tfx_modules.data_gate import dataset


def test_realized_figures_match_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(0)
    p = np.round(rng.uniform(0.01, 0.99, 5000), 2)  # many ties
    y = (rng.uniform(size=5000) < p).astype(int)
    found = performance.realized(p, (p >= 0.5).astype(int), y)
    fpr, tpr, _ = roc_curve(y, p)
    assert found["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert found["pr_auc"] == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert found["ks"] == pytest.approx(np.max(tpr - fpr), abs=1e-12)
    assert found["gini"] == pytest.approx(2 * roc_auc_score(y, p) - 1, abs=1e-12)
    assert found["accuracy"] == pytest.approx(np.mean((p >= 0.5) == y))
    assert [d["count"] for d in found["deciles"]] == [500] * 10
    assert found["ece"] < 0.03  # outcomes drawn from the scores: calibrated
    shifted = performance.realized(np.clip(p + 0.2, 0, 1), (p >= 0.5).astype(int), y)
    assert shifted["ece"] > 0.15 and shifted["auc"] == pytest.approx(found["auc"], abs=0.01)


def test_nothing_to_measure_gives_none() -> None:
    assert performance.realized(np.array([0.2, 0.7]), np.array([0, 1]), np.array([1, 1])) is None
    assert performance.estimated(np.array([]), np.array([])) is None


def test_cbpe_estimates_the_realized_auc_of_real_loans(real_csv: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    frame = dataset.read_batch(real_csv)
    x = frame[list(features.NUMERIC)].fillna(frame[list(features.NUMERIC)].median())
    x = (x - x.mean()) / x.std()
    for name in features.CATEGORICAL:
        x = x.join(frame[name].str.get_dummies().add_prefix(f"{name}="))
    y = frame[features.LABEL].to_numpy()
    rng = np.random.default_rng(1)
    order = rng.permutation(len(frame))
    fit, rest = order[:15000], order[15000:]
    model = LogisticRegression(max_iter=2000).fit(x.iloc[fit], y[fit])
    scores = model.predict_proba(x.iloc[rest])[:, 1]
    errors = []
    for window in np.array_split(rest[: 20 * 800], 20):  # 20 windows of 800 unseen loans
        p = model.predict_proba(x.loc[window])[:, 1]
        estimate = performance.estimated(p, (p >= 0.5).astype(int))
        truth = performance.realized(p, (p >= 0.5).astype(int), y[window])
        errors.append(estimate["auc"] - truth["auc"])
    whole = performance.estimated(scores, (scores >= 0.5).astype(int))["auc"]
    realized = performance.realized(scores, (scores >= 0.5).astype(int), y[rest])
    assert realized["ece"] < 0.03
    assert abs(whole - realized["auc"]) < 0.02
    assert np.mean(np.abs(errors)) < 0.03
