"""The Evaluator's blessing rules with the pipeline's own eval config: TFX's Evaluator executor judges a candidate
against the serving model on the eval split of the session's pipeline run, and each refusal says which rule."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import tensorflow as tf
from tfx.components.evaluator import executor as evaluator_executor
from tfx.types import artifact, artifact_utils, standard_artifacts
from tfx.utils import proto_utils

from common import config
from tfx_modules import pipeline
from tfx_modules.evaluation import saved_model
from tfx_modules.reporting import run_result

pytestmark = pytest.mark.slow  # the trained_home fixture runs the TFX pipeline

SERVING_DIR = "Format-Serving"  # where a Model artifact keeps its SavedModel (TFX's path_utils)


class HalfNoise(tf.Module):
    """The serving model's scores averaged with a hash of each example: a real, worse model (AUC some 0.1 lower on
    the generated rows), still above a floor of 0.5."""

    def __init__(self, model: tf.Module) -> None:
        super().__init__()
        self.model = model

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        scores = self.model.signatures[pipeline.EVAL_SIGNATURE](examples=examples)["probability"]
        noise = tf.cast(tf.strings.to_hash_bucket_fast(examples, 1000), tf.float32) / 1000.0
        worse = 0.5 * scores + 0.5 * noise
        return {"probability": worse, "label": tf.cast(worse >= 0.5, tf.int64)}


def _artifact(kind: type[artifact.Artifact], uri: Path) -> artifact.Artifact:
    made = kind()
    made.uri = str(uri)
    return made


def evaluate(trained_home: Path, candidate: Path, baseline: Path, out: Path, **floors: float) -> tuple[bool, str]:
    """Blessed or not, and the refusal reason the run's outcome would give."""
    (examples_uri,) = (trained_home / "pipeline" / "CsvExampleGen" / "examples").iterdir()
    examples = _artifact(standard_artifacts.Examples, examples_uri)
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
    worse = HalfNoise(saved_model.load(version))
    tf.saved_model.save(worse, str(root / "worse" / SERVING_DIR), signatures={pipeline.EVAL_SIGNATURE: worse.serve})
    return {"serving": root / "serving", "worse": root / "worse"}


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


def test_a_candidate_below_the_floor_is_refused_for_the_floor_alone(trained_home, models, tmp_path: Path) -> None:
    """The same model as the serving one (no regression) under an AUC floor it cannot reach."""
    blessed, reason = evaluate(trained_home, models["serving"], models["serving"], tmp_path, min_auc=0.999)

    assert not blessed
    (failure,) = reason.split("; ")
    assert failure.startswith("auc on overall: ") and "change" not in failure, reason
