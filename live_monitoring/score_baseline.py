"""The score's baseline: what a model version predicted on its own eval split, which live scores are compared with.

The eval split is the one the Evaluator judged the model on (CsvExampleGen's `Split-eval` of the model's pipeline
run, found in ML Metadata), scored through `serving_default` with raw features as a REST client sends them. Computed
once per version and kept beside its baseline statistics (`eval_scores.json`). ML environment (TensorFlow).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from common import features
from common.config import settings

CACHE_NAME = "eval_scores.json"


def serving_inputs(frame: pd.DataFrame) -> dict:
    """Raw features of `frame` as the SavedModel's signatures take them: strings, or float32 with NaN = missing."""
    import tensorflow as tf

    return {
        f.name: tf.constant(frame[f.name].astype(str if f.categorical else "float32").to_numpy())
        for f in features.FEATURES
    }


def score(model_path: str | Path, frame: pd.DataFrame) -> np.ndarray:
    """Probabilities from the SavedModel's `serving_default`, fed raw features (NaN = missing)."""
    from tfx_modules.evaluation import saved_model

    serve = saved_model.load(str(model_path)).signatures["serving_default"]
    return serve(**serving_inputs(frame))["probability"].numpy().reshape(-1)


def _eval_files(run_id: str) -> list[str]:
    """The gzipped TFRecords of the eval split CsvExampleGen wrote in the model's pipeline run."""
    from tfx_modules.node_runner import pipeline_run_id
    from tfx_modules.reporting.run_result import PIPELINE_RUN_CONTEXT, open_store

    store = open_store(settings())
    context = store.get_context_by_type_and_name(PIPELINE_RUN_CONTEXT, pipeline_run_id(run_id))
    if context is None:
        raise LookupError(f"pipeline run of {run_id!r} is not in ML Metadata: no eval split to score")
    examples = [a for a in store.get_artifacts_by_context(context.id) if "/CsvExampleGen/" in a.uri]
    files = sorted(str(p) for a in examples for p in Path(a.uri, "Split-eval").glob("*.gz"))
    if not files:
        raise LookupError(f"no eval split of CsvExampleGen in pipeline run {run_id!r}")
    return files


def eval_rows(run_id: str) -> pd.DataFrame:
    """The raw features of the eval split (missing values as NaN)."""
    import tensorflow as tf

    rows = []
    for record in tf.data.TFRecordDataset(_eval_files(run_id), compression_type="GZIP"):
        example = tf.train.Example.FromString(record.numpy()).features.feature
        row = {}
        for f in features.FEATURES:
            values = example[f.name]
            if f.categorical:
                row[f.name] = values.bytes_list.value[0].decode() if values.bytes_list.value else ""
            else:
                found = list(values.float_list.value) or list(values.int64_list.value)
                row[f.name] = float(found[0]) if found else np.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=list(features.FEATURE_NAMES))


def eval_scores(model: dict) -> np.ndarray:
    """The eval split's scores of a lineage entry's model version (cached in its baseline folder)."""
    cache = Path(model["baseline"]) / CACHE_NAME
    if cache.exists():
        return np.array(json.loads(cache.read_text())["scores"])
    model_path = model.get("model_path") or settings().model_dir / str(model["version"])
    scores = score(model_path, eval_rows(model["run_id"]))
    cache.write_text(json.dumps({"version": model["version"], "scores": [round(float(s), 6) for s in scores]}))
    return scores
