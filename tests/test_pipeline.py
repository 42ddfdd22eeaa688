"""The real TFX pipeline on generated rows: the pushed model's signatures, the outcome, bad data and refusals."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from common import config, features
from data.generate import generate
from tests.conftest import run_train
from tfx_modules import model
from tfx_modules.data_gate import dataset
from tfx_modules.evaluation import saved_model
from tfx_modules.train import EXIT_BAD_DATA, EXIT_NOT_BLESSED

pytestmark = pytest.mark.slow


def _only_version(model_dir: Path) -> Path:
    (version,) = model_dir.iterdir()
    return version


def _json_inputs(rows: list[dict]) -> dict[str, tf.Tensor]:
    """Columns as a REST client's JSON becomes tensors: numbers as float32 (None -> NaN), categories as strings."""
    return {
        f.name: tf.constant(
            [row.get(f.name) for row in rows]
            if f.categorical
            else [math.nan if row.get(f.name) is None else float(row[f.name]) for row in rows],
            tf.string if f.categorical else tf.float32,
        )
        for f in features.FEATURES
    }


@pytest.fixture(scope="module")
def serve(trained_model: Path):
    return saved_model.load(_only_version(trained_model)).signatures


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    frame = generate(50, seed=99)
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in frame.to_dict("records")
    ]


def test_push_is_in_tf_servings_layout(trained_model: Path) -> None:
    version = _only_version(trained_model)
    assert version.name.isdigit()
    assert (version / "saved_model.pb").is_file() and (version / "variables").is_dir()


def test_raw_json_features_give_probabilities_and_labels(serve, rows: list[dict]) -> None:
    out = serve["serving_default"](**_json_inputs(rows))
    probability, label = out["probability"].numpy(), out["label"].numpy()
    assert probability.shape == label.shape == (len(rows),)
    assert ((probability > 0) & (probability < 1)).all()
    np.testing.assert_array_equal(label, (probability >= 0.5).astype(np.int64))
    assert probability.std() > 0.05  # it discriminates


def test_extreme_applicants_get_probabilities_strictly_inside_0_and_1(serve, rows: list[dict]) -> None:
    """Calibrated, and never exactly 0 or 1 in float32, even far outside the training data."""
    risky = {
        **rows[0],
        "person_income": 4000,
        "loan_amnt": 35000,
        "loan_percent_income": 0.85,
        "loan_grade": "G",
        "loan_int_rate": 24.0,
        "cb_person_default_on_file": "Y",
        "person_home_ownership": "RENT",
    }
    safe = {**risky, "person_income": 1_000_000, "loan_amnt": 500, "loan_percent_income": 0.0, "loan_grade": "A"}
    safe |= {"loan_int_rate": 5.0, "cb_person_default_on_file": "N", "person_home_ownership": "MORTGAGE"}
    probability = serve["serving_default"](**_json_inputs([risky, safe]))["probability"].numpy()
    assert probability.dtype == np.float32
    assert 0 < probability[1] < probability[0] < 1


def test_missing_optional_features_and_whole_floats_are_accepted(serve, rows: list[dict]) -> None:
    """Missing optional features are imputed (interest rate 10.99), so the row scores as another applicant's would.
    The row's own rate is far from the imputed one: at 11.5 the trees had no split between the two."""
    row = {**rows[0], "person_emp_length": 5, "loan_int_rate": 23.0}
    as_float = {**row, "person_emp_length": 5.0, "person_age": float(row["person_age"])}
    missing = {**row, "person_emp_length": None, "loan_int_rate": None}
    out = serve["serving_default"](**_json_inputs([row, as_float, missing]))["probability"].numpy()
    assert out[0] == pytest.approx(out[1])
    assert np.isfinite(out[2]) and out[2] != pytest.approx(out[0])


def test_tf_example_signature_agrees_with_raw_signature(serve, rows: list[dict]) -> None:
    def example(row: dict) -> bytes:
        feature = {}
        for f in features.FEATURES:
            value = row[f.name]
            if value is None:
                continue
            if f.categorical:
                feature[f.name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
            elif f.dtype is int:
                feature[f.name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
            else:
                feature[f.name] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

    from_examples = serve["serving_examples"](examples=tf.constant([example(r) for r in rows]))["probability"]
    from_json = serve["serving_default"](**_json_inputs(rows))["probability"]
    np.testing.assert_allclose(from_examples.numpy(), from_json.numpy(), rtol=1e-5)


def test_outcome_metrics_slices_and_report(trained_home: Path) -> None:
    (report,) = (trained_home / "reports").glob("model-*.json")
    outcome = json.loads(report.read_text())
    assert outcome["blessed"] and outcome["version"] == int(_only_version(trained_home / "models" / "credit_risk").name)
    metrics = outcome["metrics"]  # measured on the session's generated rows: AUC 0.91, PR-AUC 0.78, accuracy 0.89
    assert metrics["auc"] > 0.8
    assert 0.6 < metrics["auc_precision_recall"] <= 1  # a model without skill scores the default rate, 0.22
    assert 1 - metrics["mean_label"] < metrics["binary_accuracy"] <= 1  # beats calling every loan repaid
    assert 0.5 < metrics["precision"] <= 1 and 0.5 < metrics["recall"] <= 1
    assert 0.9 < metrics["calibration"] < 1.1  # the blend is calibrated: mean score / default rate near 1 (1.00)
    assert 0 < metrics["expected_calibration_error"] < 0.1
    slices = {name.split("=")[0] for name in outcome["slices"]}
    assert slices == set(features.SLICE_FEATURES)
    html = report.with_suffix(".html").read_text()
    assert html.count("data:image/png;base64") == 2 and 'alt="ROC curve"' in html and "loan_grade=A" in html
    assert "gradient-boosted trees" in html and "trees, calibrated (served)" in html


def test_a_slice_holding_one_class_has_no_auc(trained_home: Path) -> None:
    """The generated data's grade G always defaults: its eval rows make a slice where AUC is undefined (TFMA
    writes 0); it reads None (n/a), and the defined slices keep their AUC."""
    (report,) = (trained_home / "reports").glob("model-*.json")
    slices = json.loads(report.read_text())["slices"]
    one_class = [name for name, values in slices.items() if values["mean_label"] in (0, 1)]
    assert one_class, slices
    for name, values in slices.items():
        assert (values["auc"] is None) == (name in one_class), name


def test_the_trainer_reports_the_trees_and_their_calibration(trained_home: Path) -> None:
    (report,) = (trained_home / "reports").glob("model-*.json")
    members = json.loads(report.read_text())["members"]
    assert set(members["members"]) == {"trees", "calibrated"}
    for name, values in members["members"].items():
        assert 0.8 < values["auc"] <= 1 and 0 <= values["expected_calibration_error"] < 0.1, name
    assert members["members"]["calibrated"]["auc"] == pytest.approx(members["members"]["trees"]["auc"])
    assert members["calibration"]["slope"] > 0 and len(members["tree_models"]) == model.TREE_SEEDS
    assert 0.8 < members[features.RECOMPUTED]["auc"] <= 1  # the ratio recomputed from amount and income


def test_the_dags_component_order_is_a_topological_order_of_the_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tfx_modules.component_ids import COMPONENT_IDS
    from tfx_modules.node_runner import compile_pipeline

    monkeypatch.setenv("CREDIT_RISK_HOME", str(tmp_path))
    ir = compile_pipeline(tmp_path, "run-1", config.settings())
    upstream = {n.pipeline_node.node_info.id: set(n.pipeline_node.upstream_nodes) for n in ir.nodes}
    assert set(upstream) == set(COMPONENT_IDS)
    for position, node in enumerate(COMPONENT_IDS):
        assert upstream[node] <= set(COMPONENT_IDS[:position]), node


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("", "empty"),
        ("person_age,person_income\n22,59000\n", "missing columns"),
        (None, "text in a numeric column"),
    ],
)
def test_bad_data_is_refused_with_a_reason_and_nothing_is_pushed(
    tmp_path: Path, content: str | None, reason: str
) -> None:
    path = tmp_path / "batch.csv"
    if content is None:
        frame = generate(20, seed=1).astype({"person_income": object})
        frame.loc[3, "person_income"] = "lots"
        frame.to_csv(path, index=False)
    else:
        path.write_text(content)
    result = run_train(tmp_path / "home", path)
    assert result.returncode == EXIT_BAD_DATA, result.stderr[-2000:]
    assert reason in result.stderr
    assert not (tmp_path / "home" / "models").exists()


def test_a_model_below_the_floor_is_not_blessed_and_the_old_one_stays(trained_home: Path, tmp_path: Path) -> None:
    """A second run, now with a baseline model; an impossible AUC floor refuses the candidate. On a copy of the
    session's home, which the other tests read as one run's."""
    home = tmp_path / "home"
    shutil.copytree(trained_home, home)
    data = dataset.write_canonical(generate(2000, seed=8), tmp_path / "more.csv")
    before = sorted(p.name for p in (home / "models" / "credit_risk").iterdir())
    result = run_train(home, data, env={"CREDIT_RISK_MIN_AUC": "0.999"})
    assert result.returncode == EXIT_NOT_BLESSED, result.stderr[-3000:]
    assert "not blessed: auc on overall" in result.stdout
    assert sorted(p.name for p in (home / "models" / "credit_risk").iterdir()) == before
