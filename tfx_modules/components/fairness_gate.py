"""The fairness gate: a pipeline component between the Evaluator and the Pusher.

It scores the eval split with the candidate, computes evaluation/fairness.py's table per age band and per home
ownership, and writes the blessing the Pusher reads: blessed only when the Evaluator blessed the candidate and no
between-group difference is over its limit (settings().fairness_limits). The table goes to FAIRNESS_FILE in the
blessing's folder, for the outcome, the model report and the model card. The latest-blessed-model resolver counts
only this gate's blessings (`GatedModelStrategy`), so a model the gate refused never becomes the next baseline.
"""

# No `from __future__ import annotations`: TFX reads the component's annotations as types.
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import artifact_utils, standard_artifacts

from common import features
from common.config import Settings
from tfx_modules.evaluation import fairness, saved_model

FAIRNESS_FILE = "fairness.json"
GATE_PROPERTY = "fairness_gate"  # set (1) on every blessing the gate writes
BLESSED = "blessed"
CURRENT_MODEL = "current_model"
CURRENT_MODEL_ID = "current_model_id"
EVAL_SPLIT = "eval"
SCORE_BATCH = 4096


@dataclass(frozen=True)
class GateConfig:
    threshold: float
    age_bands: tuple[int, ...]
    limits: dict[str, dict[str, float]]
    min_group_rows: int

    @classmethod
    def from_settings(cls, settings: Settings) -> "GateConfig":
        return cls(
            settings.decision_threshold,
            settings.age_bands,
            settings.fairness_limits,
            settings.fairness_min_group_rows,
        )


def _eval_examples(examples: standard_artifacts.Examples) -> list[bytes]:
    pattern = str(Path(artifact_utils.get_split_uri([examples], EVAL_SPLIT)) / "*")
    return list(tf.data.TFRecordDataset(tf.io.gfile.glob(pattern), compression_type="GZIP").as_numpy_iterator())


def evaluate(model_dir: str, serialized: list[bytes], config: GateConfig) -> fairness.Table:
    """The fairness table of the model in `model_dir` on serialized tf.Examples of raw features and the label."""
    score = saved_model.load(model_dir).signatures["serving_examples"]
    scores = np.concatenate(
        [
            score(examples=tf.constant(serialized[i : i + SCORE_BATCH]))["probability"].numpy()
            for i in range(0, len(serialized), SCORE_BATCH)
        ]
    )
    spec = {
        fairness.AGE: tf.io.FixedLenFeature([], tf.int64),  # whole years: ExampleGen infers INT64
        fairness.HOME: tf.io.FixedLenFeature([], tf.string),
        features.LABEL: tf.io.FixedLenFeature([], tf.int64),
    }
    parsed = {k: v.numpy() for k, v in tf.io.parse_example(tf.constant(serialized), spec).items()}
    sensitive = {
        fairness.AGE_BAND: fairness.age_bands(parsed[fairness.AGE], config.age_bands),
        fairness.HOME: parsed[fairness.HOME].astype(str),
    }
    order = {fairness.AGE_BAND: fairness.band_names(config.age_bands)}
    return fairness.table(parsed[features.LABEL], scores, sensitive, config.threshold, config.min_group_rows, order)


def verdict(table: fairness.Table, config: GateConfig) -> list[fairness.Violation]:
    return [v for feature, limits in config.limits.items() for v in fairness.violations(table, feature, limits)]


@tfx.dsl.components.component
def FairnessGate(
    examples: tfx.dsl.components.InputArtifact[standard_artifacts.Examples],
    model: tfx.dsl.components.InputArtifact[standard_artifacts.Model],
    evaluator_blessing: tfx.dsl.components.InputArtifact[standard_artifacts.ModelBlessing],
    blessing: tfx.dsl.components.OutputArtifact[standard_artifacts.ModelBlessing],
    gate_config: tfx.dsl.components.Parameter[str],
) -> None:
    """Bless the model when the Evaluator did and every fairness difference is within its limit."""
    config = GateConfig(**json.loads(gate_config))
    table = evaluate(str(Path(model.uri) / "Format-Serving"), _eval_examples(examples), config)
    found = verdict(table, config)
    evaluator_blessed = evaluator_blessing.get_int_custom_property(BLESSED) == 1
    blessed = evaluator_blessed and not found
    report = {
        **table.to_dict(),
        "limits": config.limits,
        "age_bands": fairness.band_names(config.age_bands),
        "violations": [{**asdict(v), "line": v.line, "detail": v.detail} for v in found],
        "evaluator_blessed": evaluator_blessed,
    }
    Path(blessing.uri).mkdir(parents=True, exist_ok=True)
    (Path(blessing.uri) / FAIRNESS_FILE).write_text(json.dumps(report, indent=2))
    (Path(blessing.uri) / ("BLESSED" if blessed else "NOT_BLESSED")).write_text("")
    blessing.set_int_custom_property(BLESSED, int(blessed))
    blessing.set_int_custom_property(GATE_PROPERTY, 1)
    blessing.set_string_custom_property(CURRENT_MODEL, model.uri)
    blessing.set_int_custom_property(CURRENT_MODEL_ID, model.id)


class GatedModelStrategy(tfx.dsl.experimental.LatestBlessedModelStrategy):
    """The latest model the fairness gate blessed (the Evaluator's own blessings are not counted)."""

    def _resolve(self, input_dict, model_channel_key, model_blessing_channel_key):
        gated = [a for a in input_dict[model_blessing_channel_key] if a.get_int_custom_property(GATE_PROPERTY) == 1]
        return super()._resolve(
            {**input_dict, model_blessing_channel_key: gated}, model_channel_key, model_blessing_channel_key
        )
