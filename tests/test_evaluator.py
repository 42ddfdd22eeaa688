"""The Evaluator's blessing rules with the pipeline's own eval config: TFX's Evaluator executor judges a candidate
against the serving model on the eval split of the session's pipeline run, and each refusal says which rule."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import roc_auc_score
from tfx.components.evaluator import executor as evaluator_executor
from tfx.types import artifact, artifact_utils, standard_artifacts
from tfx.utils import proto_utils

from common import config, features
from tfx_modules import pipeline
from tfx_modules.evaluation import saved_model
from tfx_modules.reporting import run_result

pytestmark = pytest.mark.slow  # the trained_home fixture runs the TFX pipeline

SERVING_DIR = "Format-Serving"  # where a Model artifact keeps its SavedModel (TFX's path_utils)


def hash_noise(examples: tf.Tensor) -> tf.Tensor:
    """A score in [0, 1) that depends on nothing but the serialized example's bytes."""
    return tf.cast(tf.strings.to_hash_bucket_fast(examples, 1000), tf.float32) / 1000.0


class Blend(tf.Module):
    """The serving model's scores blended with `hash_noise`, `weight` of it noise: a real, worse model whose AUC
    falls as the weight grows (0.5: some 0.1 lower on the generated rows, still above a floor of 0.5)."""

    def __init__(self, model: tf.Module, weight: float) -> None:
        super().__init__()
        self.model = model
        self.weight = weight

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        scores = self.model.signatures[pipeline.EVAL_SIGNATURE](examples=examples)["probability"]
        worse = (1.0 - self.weight) * scores + self.weight * hash_noise(examples)
        return {"probability": worse, "label": tf.cast(worse >= 0.5, tf.int64)}


def save_blend(version: Path, weight: float, folder: Path) -> Path:
    """A Model artifact folder holding the SavedModel of `Blend` over the serving model in `version`."""
    blend = Blend(saved_model.load(version), weight)
    tf.saved_model.save(blend, str(folder / SERVING_DIR), signatures={pipeline.EVAL_SIGNATURE: blend.serve})
    return folder


def examples_uri(trained_home: Path) -> Path:
    """The Examples artifact of the session's one pipeline run (the trained_home fixture keeps it one)."""
    (uri,) = (trained_home / "pipeline" / "CsvExampleGen" / "examples").iterdir()
    return uri


def eval_examples(trained_home: Path) -> tuple[tf.Tensor, np.ndarray]:
    """The session run's eval split, as the Evaluator reads it: serialized examples and their labels."""
    files = sorted(str(p) for p in (examples_uri(trained_home) / "Split-eval").iterdir())
    serialized = list(tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator())
    label = [tf.train.Example.FromString(s).features.feature[features.LABEL] for s in serialized]
    return tf.constant(serialized), np.array([(f.int64_list.value or f.float_list.value)[0] for f in label])


def blend_weight_for(drop: float, version: Path, trained_home: Path) -> float:
    """The noise weight at which `Blend` scores an AUC `drop` below the serving model on the eval split (bisection;
    AUC falls with the weight over [0, 0.5])."""
    examples, labels = eval_examples(trained_home)
    scores = saved_model.load(version).signatures[pipeline.EVAL_SIGNATURE](examples=examples)["probability"].numpy()
    noise = hash_noise(examples).numpy()
    target = roc_auc_score(labels, scores.ravel()) - drop
    low, high = 0.0, 0.5
    for _ in range(40):
        weight = (low + high) / 2
        blended = (1.0 - weight) * scores.ravel() + weight * noise.ravel()
        low, high = (weight, high) if roc_auc_score(labels, blended) > target else (low, weight)
    return (low + high) / 2


def _artifact(kind: type[artifact.Artifact], uri: Path) -> artifact.Artifact:
    made = kind()
    made.uri = str(uri)
    return made


def evaluate(trained_home: Path, candidate: Path, baseline: Path, out: Path, **floors: float) -> tuple[bool, str]:
    """Blessed or not, and the refusal reason the run's outcome would give."""
    examples = _artifact(standard_artifacts.Examples, examples_uri(trained_home))
    examples.split_names = artifact_utils.encode_split_names(["train", "eval"])
    evaluation = _artifact(standard_artifacts.ModelEvaluation, out / "evaluation")
    blessing = _artifact(standard_artifacts.ModelBlessing, out / "blessing")
    settings = dataclasses.replace(config.settings(), **floors)
    evaluator_executor.Executor().Do(
        {
            "examples": [examples],
            "model": [_artifact(standard_artifacts.Model, candidate)],
            "baseline_model": [_artifact(standard_artifacts.Model, baseline)],
        },
        {"evaluation": [evaluation], "blessing": [blessing]},
        {"eval_config": proto_utils.proto_to_json(pipeline.eval_config(settings)), "example_splits": '["eval"]'},
    )
    blessed = blessing.get_int_custom_property("blessed") == 1
    return blessed, "" if blessed else run_result.refusal_reason(evaluation.uri)


@pytest.fixture(scope="module")
def models(trained_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Model artifacts: the serving model, and a worse one built on it."""
    root = tmp_path_factory.mktemp("evaluator_models")
    (version,) = trained_model.iterdir()
    shutil.copytree(version, root / "serving" / SERVING_DIR)
    return {"serving": root / "serving", "worse": save_blend(version, 0.5, root / "worse")}


def test_a_candidate_as_good_as_the_serving_model_is_blessed(trained_home, models, tmp_path: Path) -> None:
    assert evaluate(trained_home, models["serving"], models["serving"], tmp_path) == (True, "")


def test_a_candidate_worse_than_the_serving_model_is_refused_for_the_regression(
    trained_home, models, tmp_path: Path
) -> None:
    """Above every floor, but its AUC is more than MAX_AUC_REGRESSION below the serving model's."""
    blessed, reason = evaluate(trained_home, models["worse"], models["serving"], tmp_path, min_auc=0.5, min_accuracy=0)

    assert not blessed
    (failure,) = reason.split("; ")
    change = float(failure.removeprefix("auc change against the serving model on overall: ").split()[0])
    assert change < -pipeline.MAX_AUC_REGRESSION, reason


@pytest.mark.parametrize(("drop", "blessed"), [(0.005, True), (0.015, False)])
def test_no_regression_holds_at_its_limit(
    trained_home: Path, trained_model: Path, tmp_path: Path, drop: float, blessed: bool
) -> None:
    """A candidate `drop` AUC below the serving model (MAX_AUC_REGRESSION is 0.01): half the limit is blessed, one
    and a half times it refused for the regression alone, so a rule refusing every drop or none fails here. The
    candidates are real SavedModels, their noise weight found on the eval split the Evaluator reads."""
    (version,) = trained_model.iterdir()
    candidate = save_blend(version, blend_weight_for(drop, version, trained_home), tmp_path / "candidate")
    serving = tmp_path / "serving"
    shutil.copytree(version, serving / SERVING_DIR)

    found, reason = evaluate(trained_home, candidate, serving, tmp_path / "out", min_auc=0.5, min_accuracy=0)

    assert found is blessed, reason
    if not blessed:
        (failure,) = reason.split("; ")
        change = float(failure.removeprefix("auc change against the serving model on overall: ").split()[0])
        assert change == pytest.approx(-drop, abs=0.002), reason  # TFMA's bucketed AUC, not the exact one


def test_a_candidate_below_the_floor_is_refused_for_the_floor_alone(trained_home, models, tmp_path: Path) -> None:
    """The same model as the serving one (no regression) under an AUC floor it cannot reach."""
    blessed, reason = evaluate(trained_home, models["serving"], models["serving"], tmp_path, min_auc=0.999)

    assert not blessed
    (failure,) = reason.split("; ")
    assert failure.startswith("auc on overall: ") and "change" not in failure, reason
