"""The fairness gate: fairlearn's definitions, and the pipeline refusing a model trained on an age-biased batch while
the real data passes with the default limits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from common import config
from data.fetch import SHARED_DATASET as REAL_CSV
from data.generate import generate
from tests.conftest import TRAIN_ROWS, run_train
from tfx_modules.data_gate import dataset
from tfx_modules.evaluation import fairness
from tfx_modules.train import EXIT_NOT_BLESSED


def test_group_metrics_and_differences_follow_fairlearns_definitions() -> None:
    labels = np.array([1, 1, 0, 0, 1, 0, 0, 0])
    scores = np.array([0.9, 0.2, 0.6, 0.1, 0.8, 0.7, 0.4, 0.3])
    groups = np.array(["a", "a", "a", "a", "b", "b", "b", "b"])
    table = fairness.table(labels, scores, {"g": groups}, threshold=0.5, min_count=1)
    a, b = table.groups["g"]
    # a: predicted 1 for 0.9 and 0.6; b: for 0.8 and 0.7.
    assert (a.positive_rate, a.true_positive_rate, a.false_positive_rate) == (0.5, 0.5, 0.5)
    assert (b.positive_rate, b.true_positive_rate, b.false_positive_rate) == (0.5, 1.0, 1 / 3)
    assert a.auc == 0.75 and b.auc == 1.0
    parity, odds = table.differences["g"]
    assert parity.metric == fairness.DEMOGRAPHIC_PARITY and parity.value == 0.0
    # equalized odds: max(|TPR a - TPR b|, |FPR a - FPR b|) = max(0.5, 1/6)
    assert odds.metric == fairness.EQUALIZED_ODDS and odds.value == 0.5 and odds.groups == ("b", "a")
    (over,) = fairness.violations(table, "g", {fairness.EQUALIZED_ODDS: 0.4, fairness.DEMOGRAPHIC_PARITY: 0.1})
    assert over.line == "equalized_odds_difference g=b 0.500 > 0.400"
    assert fairness.violations(table, "g", {fairness.EQUALIZED_ODDS: 0.5}) == []


def test_small_groups_are_reported_but_left_out_of_the_differences() -> None:
    labels, scores = np.array([0, 1, 0, 1, 1]), np.array([0.1, 0.9, 0.2, 0.8, 0.1])
    table = fairness.table(labels, scores, {"g": np.array(["a", "a", "a", "a", "b"])}, 0.5, min_count=2)
    assert [g.group for g in table.groups["g"]] == ["a", "b"]
    assert table.groups["g"][1].auc is None  # one class only
    assert all(d.value == 0 for d in table.differences["g"])


def test_a_true_positive_rate_counts_only_with_enough_defaults_behind_it() -> None:
    """Three groups of 40 rows: c's 4 defaults (true-positive rate 0.25) stay out of the equalized-odds spread at
    min_count 5, which a and b (10 defaults each) decide; the positive rate (40 rows each) counts c."""
    labels = np.array(([1] * 10 + [0] * 30) * 2 + [1] * 4 + [0] * 36)
    a = [0.9] * 8 + [0.1] * 2 + [0.1] * 30  # TPR 0.8, positive rate 0.2
    b = [0.9] * 7 + [0.1] * 3 + [0.1] * 30  # TPR 0.7, positive rate 0.175
    c = [0.9] * 1 + [0.1] * 3 + [0.1] * 36  # TPR 0.25, positive rate 0.025
    groups = np.array(["a"] * 40 + ["b"] * 40 + ["c"] * 40)
    parity, odds = fairness.table(labels, np.array(a + b + c), {"g": groups}, 0.5, min_count=5).differences["g"]
    assert (parity.groups, round(parity.value, 3)) == (("a", "c"), 0.175)
    assert (odds.groups, odds.rate, round(odds.value, 3)) == (("a", "b"), "true_positive_rate", 0.1)


def test_age_bands_follow_the_settings() -> None:
    assert fairness.band_names(config.DEFAULT_AGE_BANDS) == ["<25", "25-34", "35-49", "50+"]
    bands = fairness.age_bands(np.array([18, 24, 25, 34, 35, 49, 50, 90]), config.DEFAULT_AGE_BANDS)
    assert bands.tolist() == ["<25", "<25", "25-34", "25-34", "35-49", "35-49", "50+", "50+"]


def test_the_biased_generator_makes_default_depend_on_age_band() -> None:
    fair, biased = generate(20_000, seed=1), generate(20_000, seed=1, age_bias=3.0)
    young = fair["person_age"] < 25
    assert abs(fair[young].loan_status.mean() - fair[~young].loan_status.mean()) < 0.05
    assert biased[young].loan_status.mean() - biased[~young].loan_status.mean() > 0.2


def _versions(home: Path) -> list[str]:
    model_dir = home / "models" / config.MODEL_NAME
    return sorted(p.name for p in model_dir.iterdir()) if model_dir.exists() else []


@pytest.mark.slow  # runs the TFX pipeline on a copy of the trained home
def test_a_model_trained_on_an_age_biased_batch_is_refused_and_the_old_one_stays(
    trained_home: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    shutil.copytree(trained_home, home)
    before = _versions(home)
    data = dataset.write_canonical(generate(TRAIN_ROWS, seed=8, age_bias=3.0), tmp_path / "biased.csv")
    result = run_train(home, data)
    assert result.returncode == EXIT_NOT_BLESSED, result.stdout + result.stderr[-3000:]
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("not blessed: fairness: "), line
    metric, group, value, gt, limit = line.removeprefix("not blessed: fairness: ").split(";")[0].split(" ")
    assert metric in fairness.DIFFERENCES and group.startswith("age_band=") and gt == ">"
    assert float(value) > float(limit) == config.DEFAULT_FAIRNESS_LIMITS["age_band"][metric]
    assert _versions(home) == before  # nothing pushed: serving keeps the old model
    (report,) = (line.removeprefix("report: ") for line in result.stdout.splitlines() if line.startswith("report: "))
    assert json.loads(Path(report).with_suffix(".json").read_text())["fairness"]["violations"]  # this run's report


@pytest.mark.slow  # the whole pipeline on the 32,581 real rows (minutes)
def test_the_real_data_passes_the_fairness_gate_with_default_limits(tmp_path: Path) -> None:
    result = run_train(tmp_path / "home", REAL_CSV, "--json")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    outcome = json.loads(next(line for line in result.stdout.splitlines() if line.startswith('{"run_id"')))
    assert outcome["fairness"]["violations"] == []
    bands = [g["group"] for g in outcome["fairness"]["groups"][fairness.AGE_BAND]]
    assert bands == ["<25", "25-34", "35-49", "50+"]
    assert {g["group"] for g in outcome["fairness"]["groups"][fairness.HOME]} == {"MORTGAGE", "OTHER", "OWN", "RENT"}
