"""The score is monotone where a lender expects it: for held-out real applicants, each feature the spec gives a
direction (features.MONOTONE) is stepped over its range, all else fixed, through the pushed SavedModel's
`serving_default`; no step may lower the score beyond float rounding. The same check on trees trained without the
constraints (same Transform graph, same examples, exported the same way) finds decreases, so it can fail. And the reason
codes agree: moving a declined applicant's top reason to the baseline applicant's value lowers the score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow_transform as tft
from sklearn.model_selection import train_test_split

from common import config, features
from live_monitoring.score_baseline import serving_inputs
from tests.conftest import run_train
from tfx_modules import model
from tfx_modules.data_gate import dataset
from tfx_modules.evaluation import explain, saved_model

pytestmark = pytest.mark.slow  # a pipeline run on real rows

TRAIN_ROWS = 6000
HELD_OUT = 120
STEPS = 25
TOLERANCE = 1e-6  # float32 rounding of a probability


@pytest.fixture(scope="module")
def trained(real_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, pd.DataFrame]:
    """The pipeline on TRAIN_ROWS real rows as recorded; its home, its pushed SavedModel and held-out rows."""
    frame = dataset.read_batch(real_csv)
    train, held_out = train_test_split(
        frame, train_size=TRAIN_ROWS, test_size=HELD_OUT, stratify=frame[features.LABEL], random_state=5
    )
    home = tmp_path_factory.mktemp("monotone_home")
    result = run_train(home, dataset.write_canonical(train, home / "train.csv"))
    assert result.returncode == 0, f"training failed:\n{result.stdout}\n{result.stderr[-5000:]}"
    (version,) = (home / "models" / config.MODEL_NAME).iterdir()
    return home, version, held_out.reset_index(drop=True)


@pytest.fixture(scope="module")
def unconstrained(trained: tuple[Path, Path, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trees trained without the monotonic constraints on the run's own Transform output, exported as the Trainer
    exports the shipped ones."""
    home = trained[0]

    def latest(component: str, output: str) -> Path:
        return max((home / "pipeline" / component / output).iterdir(), key=lambda folder: int(folder.name))

    transform_output = tft.TFTransformOutput(str(latest("Transform", "transform_graph")))
    examples = latest("CsvExampleGen", "examples")
    train, evaluation = (
        model._columns(model._dataset([str(p) for p in (examples / f"Split-{name}").iterdir()], transform_output))
        for name in ("train", "eval")
    )
    trees = model.train_trees(train, evaluation, seed=0, monotone=False)
    platt = model.fit_platt(evaluation[1], model.trees_logit(trees, evaluation[0]))
    path = tmp_path_factory.mktemp("unconstrained") / "1"
    model.export(str(path), trees, platt, transform_output, threshold=0.5)
    return path


def _grid(feature: features.Feature) -> np.ndarray | list[str]:
    """A feature's values from least to most risky: an ordinal vocabulary, or STEPS numbers a tenth past each end
    of the range the Transform clips to (within the valid range)."""
    if feature.categorical:
        return list(feature.vocabulary)
    low, high = feature.clip
    span = high - low
    return np.linspace(max(feature.valid[0], low - span / 10), high + span / 10, STEPS)[:: feature.monotone]


def decreases(model_path: Path, applicants: pd.DataFrame) -> dict[str, int]:
    """Per directed feature: how many steps towards more risk lowered an applicant's served probability."""
    serve = saved_model.load(str(model_path)).signatures["serving_default"]
    found = {}
    for name in features.MONOTONE:
        values = _grid(features.BY_NAME[name])
        stepped = applicants.loc[applicants.index.repeat(len(values))].reset_index(drop=True)
        stepped[name] = np.tile(values, len(applicants))
        probability = serve(**serving_inputs(stepped))["probability"].numpy().reshape(len(applicants), -1)
        found[name] = int((np.diff(probability, axis=1) < -TOLERANCE).sum())
    return found


def test_the_shipped_model_never_lowers_a_score_as_a_directed_feature_gets_riskier(trained) -> None:
    _, version, held_out = trained
    assert decreases(version, held_out) == dict.fromkeys(features.MONOTONE, 0)


def test_the_check_finds_decreases_in_trees_trained_without_the_constraints(trained, unconstrained: Path) -> None:
    found = decreases(unconstrained, trained[2])
    assert sum(found.values()) > 0, found


def test_moving_a_declined_applicants_top_reason_to_its_baseline_value_lowers_the_score(trained) -> None:
    _, version, held_out = trained
    signatures = saved_model.load(str(version)).signatures
    probability = signatures["serving_default"](**serving_inputs(held_out))["probability"].numpy()
    declined = held_out[probability >= 0.5].head(explain.MAX_INSTANCES).reset_index(drop=True)
    assert len(declined) >= 10, len(declined)
    codes = signatures[model.EXPLAIN](**serving_inputs(declined))[explain.REASON_CODES].numpy()[:, 0].astype(str)
    by_code = {reason.code: name for name, reason in features.REASONS.items()}
    moved = declined.copy()
    for row, code in enumerate(codes):
        name = by_code[code.rsplit("_", 1)[0] if code not in by_code else code]
        moved.loc[row, name] = features.BASELINE[name]
    before = probability[probability >= 0.5][: len(declined)]
    after = signatures["serving_default"](**serving_inputs(moved))["probability"].numpy()
    assert (after < before).all(), list(zip(codes, before, after, strict=True))
