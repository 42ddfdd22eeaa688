"""The TFX module: `preprocessing_fn` for Transform and `run_fn` for Trainer, hyperparameters on top.

Transform: each numeric feature becomes its value scaled to [0, 1] after imputing, clipping and (for long tails)
log-compressing, and, for optional features, a missing flag. A nominal categorical feature becomes an integer id by a
vocabulary with one out-of-vocabulary bucket; an ordinal one (a direction in `features.py`, such as the loan grade A
to G) becomes its position in the spec's vocabulary, scaled to [0, 1]. Values come from `features.py`. One input can
be derived (off by default): the gap between loan amount / income and the declared loan_percent_income, an artifact
of how this dataset was recorded (see DECLARED_RATIO_GAP).

Trainer: gradient-boosted trees (trained with YDF, the library under TensorFlow Decision Forests, and run by TF-DF's
inference op) on the Transform output, monotone by construction in every feature the spec gives a direction: all
else equal, the score never falls as such a feature gets riskier. TREE_SEEDS models differ by seed and row sampling;
their logits are averaged (an average of monotone functions stays monotone), and Platt scaling with two positive
slopes (one below a logit of 0, one above) and an intercept, fitted on the eval split, calibrates it. The MLP members
of earlier versions are gone: they could not be made monotone. Trees and calibration are one SavedModel (TF Serving
>= 2.11 has TF-DF's ops built in); the final clip to [EPSILON, 1 - EPSILON] only guards against float rounding. The
metrics on the eval split go to `MEMBERS_FILE` in the Trainer's ModelRun artifact, for the model report.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import ydf
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from tfx import v1 as tfx

from common import features
from common.config import settings
from tfx_modules.evaluation import calibration
from tfx_modules.evaluation.explain import LOGIT, explainer

# Transform
NUM_OOV_BUCKETS = 1
MISSING_SUFFIX = "_missing"
# A derived input, off by default (CREDIT_RISK_DERIVED_INPUTS). In the public dataset 421 applications declare a
# loan_percent_income 0.006-0.093 below amount / income, and every one of them defaulted: a recording artifact, not a
# risk signal. An intake system computes the ratio from amount and income, so on real traffic the gap is ~0 and a
# model that learned it does worse. It also breaks the monotonicity in loan_percent_income (the gap falls as it rises).
DECLARED_RATIO_GAP = features.Feature("loan_percent_income_gap", float, clip=(-0.01, 0.1))
# Gradient-boosted trees: TREE_SEEDS models, each early-stopped on the eval split, their logits averaged
# (bench/results/tree_search.json: row and attribute sampling gave +0.002 ROC-AUC on a held-out split; averaging
# three seeds, depth 4, 7 or 8, a lower shrinkage and L2 regularization gave nothing beyond the noise)
TREES = {"num_trees": 1000, "max_depth": 6, "shrinkage": 0.05, "subsample": 0.8, "num_candidate_attributes_ratio": 0.8}
TREE_SEEDS = 1
# Training budget: past this size the Trainer's cost stops growing with the data (it does not apply to 26k rows).
READ_BATCH = 4096  # examples parsed and transformed at a time
TREE_EXAMPLES = 1 << 18  # each tree grows on a fresh random sample of this many rows (stochastic gradient boosting)
EPSILON = 1e-6  # float32's sigmoid rounds to exactly 1 above a logit of ~17
# custom_config keys and names
DECISION_THRESHOLD_KEY = "decision_threshold"
DERIVED_INPUTS_KEY = "derived_inputs"
SEED_KEY = "seed"
PROBABILITY = "probability"
MEMBERS_FILE = "members.json"
AGE = "person_age"  # an input a lender may choose to leave out (CREDIT_RISK_USE_AGE=off)
EXPLAIN = "explain"  # the reason-code signature (tfx_modules/evaluation/explain.py)


def _dense(value: tf.Tensor | tf.SparseTensor, default: float | str) -> tf.Tensor:
    """A feature as a 1-D dense tensor: optional features arrive sparse from tf.Example (absent = missing)."""
    if isinstance(value, tf.SparseTensor):
        value = tft.sparse_tensor_to_dense_with_shape(value, [None, 1], default_value=default)
    return tf.reshape(value, [-1])


def _numeric(feature: features.Feature, value: tf.Tensor | tf.SparseTensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Imputed, clipped and tail-compressed value, plus a 0/1 missing flag."""
    if isinstance(value, tf.SparseTensor):
        value = tf.SparseTensor(value.indices, tf.cast(value.values, tf.float32), value.dense_shape)
    raw = tf.cast(_dense(value, math.nan), tf.float32)
    missing = tf.math.is_nan(raw)
    x = tf.where(missing, tf.constant(feature.default or 0.0, tf.float32), raw)
    x = tf.clip_by_value(x, *feature.clip)
    if feature.log:
        x = tf.math.log1p(x)
    return x, tf.cast(missing, tf.float32)


def _ordinal(feature: features.Feature, value: tf.Tensor | tf.SparseTensor) -> tf.Tensor:
    """An ordinal category's position in the spec's vocabulary (least to most risky), scaled to [0, 1]. A value
    outside the vocabulary (validation rejects those) counts as the riskiest, so it never lowers a score."""
    matches = tf.equal(_dense(value, "")[:, None], tf.constant(feature.vocabulary)[None, :])
    last = len(feature.vocabulary) - 1
    position = tf.where(tf.reduce_any(matches, axis=1), tf.argmax(tf.cast(matches, tf.int32), axis=1), last)
    return tf.cast(position, tf.float32) / last


def _declared_ratio_gap(inputs: dict[str, tf.Tensor | tf.SparseTensor]) -> tf.Tensor:
    """Loan amount / income minus the declared loan_percent_income (which is rounded to 0.01)."""
    amount, income, declared = (
        tf.cast(_dense(inputs[name], 0), tf.float32) for name in ("loan_amnt", "person_income", "loan_percent_income")
    )
    return amount / tf.maximum(income, 1.0) - declared


# Each derived input and how it is computed from the raw inputs.
DERIVED_INPUTS: tuple[tuple[features.Feature, Callable[[dict], tf.Tensor]], ...] = (
    (DECLARED_RATIO_GAP, _declared_ratio_gap),
)


def model_inputs() -> tuple[str, ...]:
    """The raw features the model learns from: all of them, or all but person_age when settings().use_age is off
    (the age is still read, validated and used by the fairness gate)."""
    return tuple(name for name in features.FEATURE_NAMES if settings().use_age or name != AGE)


def preprocessing_fn(
    inputs: dict[str, tf.Tensor | tf.SparseTensor], custom_config: dict | None = None
) -> dict[str, tf.Tensor]:
    """TFT preprocessing: numeric to [0, 1] (+ missing flag), nominal categories to vocabulary ids, ordinal ones to
    their scaled position. The derived inputs are added when `custom_config[DERIVED_INPUTS_KEY]` is true."""
    used = model_inputs()
    categorical = [features.BY_NAME[name] for name in features.CATEGORICAL if name in used]
    outputs = {
        f.name: _ordinal(f, inputs[f.name])
        if f.ordinal
        else tft.compute_and_apply_vocabulary(
            _dense(inputs[f.name], ""), num_oov_buckets=NUM_OOV_BUCKETS, vocab_filename=f.name
        )
        for f in categorical
    }
    numeric = [(features.BY_NAME[name], inputs[name]) for name in features.NUMERIC if name in used]
    with_derived = (custom_config or {}).get(DERIVED_INPUTS_KEY, False)
    derived = [(feature, compute(inputs)) for feature, compute in DERIVED_INPUTS if with_derived]
    for feature, raw in [*numeric, *derived]:
        value, missing = _numeric(feature, raw)
        outputs[feature.name] = tft.scale_to_0_1(value)
        if feature.optional:
            outputs[feature.name + MISSING_SUFFIX] = missing
    outputs[features.LABEL] = tf.cast(_dense(inputs[features.LABEL], 0), tf.int64)
    return outputs


def recomputed_ratio(raw: dict[str, tf.Tensor]) -> tf.Tensor:
    """loan_percent_income as an intake system computes it (features.RATIO_DECIMALS), shaped and typed as the raw
    loan_percent_income."""
    declared = raw["loan_percent_income"]
    amount, income = (tf.cast(raw[name], tf.float64) for name in ("loan_amnt", "person_income"))
    scale = 10.0**features.RATIO_DECIMALS
    return tf.cast(tf.round(amount / tf.maximum(income, 1.0) * scale) / scale, declared.dtype)


def _dataset(
    file_patterns: list[str], tf_transform_output: tft.TFTransformOutput, recompute: bool = False
) -> tf.data.Dataset:
    """A split's raw examples through the Transform graph as (features, label), parsed and transformed a batch at a
    time: it costs no more than parsing materialized output would (Transform does not write it: at 3.2M rows that pass
    cost minutes) and trains on exactly what serving computes. Seconds per pass, where TFX's generic `data_accessor`
    spends ~20 s on the first. `recompute` replaces the declared loan_percent_income by `recomputed_ratio`."""
    files = [name for pattern in file_patterns for name in tf.io.gfile.glob(pattern)]
    spec = tf_transform_output.raw_feature_spec()
    transform = tf_transform_output.transform_features_layer()

    def parse(serialized: tf.Tensor) -> tuple[dict, tf.Tensor]:
        raw = tf.io.parse_example(serialized, spec)
        if recompute:
            raw["loan_percent_income"] = recomputed_ratio(raw)
        transformed = transform(raw)
        return transformed, transformed.pop(features.LABEL)

    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(READ_BATCH)
    return dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _columns(dataset: tf.data.Dataset) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A split's transformed features and labels as NumPy columns (YDF trains from memory), joined a column at a
    time with each column's batches let go as it is joined: at 3M rows, one copy of the data at peak, not two."""
    batches = list(dataset.as_numpy_iterator())
    labels = np.concatenate([label for _, label in batches])
    return {name: np.concatenate([x.pop(name) for x, _ in batches]) for name in list(batches[0][0])}, labels


def _tree_sampling(rows: int, trees: dict) -> dict:
    """Each tree grows on a random share of the rows (YDF's stochastic gradient boosting): the settings' share, and
    past TREE_EXAMPLES rows no more than that many."""
    return {"sampling_method": "RANDOM", "subsample": min(trees.get("subsample", 1.0), TREE_EXAMPLES / rows)}


def tree_features(monotone: bool = True) -> list[ydf.Feature]:
    """How YDF reads the Transform output: nominal categories as categorical, and each feature with a direction in
    the spec as numerical with that monotonic constraint (the Transform keeps the order: scaling, clipping, log and
    the ordinal position are all non-decreasing). `monotone` off drops the constraints (the benchmark's frontier)."""
    return [
        ydf.Feature(f.name, ydf.Semantic.NUMERICAL, monotonic=f.monotone if monotone else None)
        if f.monotone
        else ydf.Feature(f.name, ydf.Semantic.CATEGORICAL)
        for f in features.FEATURES
        if f.name in model_inputs() and (f.monotone or f.categorical)
    ]


def train_trees(
    train: tuple[dict, np.ndarray],
    evaluation: tuple[dict, np.ndarray],
    seed: int,
    trees: dict = TREES,
    count: int = TREE_SEEDS,
    monotone: bool = True,
) -> list[ydf.GenericModel]:
    """`count` gradient-boosted tree models answering a logit, each early-stopped on the eval split and monotone in
    the spec's directed features (YDF needs the Hessian gain for that). YDF is the training library under TF-DF."""
    train_columns, evaluation_columns = ({**x, features.LABEL: labels} for x, labels in (train, evaluation))
    return [
        ydf.GradientBoostedTreesLearner(
            label=features.LABEL,
            features=tree_features(monotone),
            include_all_columns=True,
            apply_link_function=False,
            use_hessian_gain=True,
            random_seed=seed + i,
            **{**trees, **_tree_sampling(len(train[1]), trees)},
        ).train(train_columns, valid=evaluation_columns, verbose=0)
        for i in range(count)
    ]


def trees_logit(trees: list[ydf.GenericModel], columns: dict[str, np.ndarray]) -> np.ndarray:
    """The average logit of the tree models (an average of monotone functions is monotone)."""
    return np.mean([model.predict(columns) for model in trees], axis=0)


def _positive_part(logit: np.ndarray | tf.Tensor):
    """max(logit, 0), for NumPy arrays and tensors alike."""
    return (logit + abs(logit)) / 2


@dataclass(frozen=True)
class Platt:
    """probability = sigmoid(slope * l + upper_slope * max(l, 0) + intercept), l the trees' average logit: Platt
    scaling with a second slope above l = 0. The monotone trees' logit is overconfident on one side of 0 and not the
    other; one slope left ECE at 0.013 on a held-out split, two at 0.008 (bench/results/tree_search.json's seed). Both
    slopes on each side are positive, so the order is kept."""

    slope: float
    upper_slope: float
    intercept: float

    def calibrated(self, logit: np.ndarray | tf.Tensor):
        return self.slope * logit + self.upper_slope * _positive_part(logit) + self.intercept


def fit_platt(labels: np.ndarray, logit: np.ndarray) -> Platt:
    """Two-slope Platt scaling of the trees' logit on the eval split (a logistic regression on l and max(l, 0)); one
    slope when two would not both be positive."""
    two = LogisticRegression(C=1e6).fit(np.c_[logit, _positive_part(logit)], labels)
    fitted = Platt(float(two.coef_[0, 0]), float(two.coef_[0, 1]), float(two.intercept_[0]))
    if min(fitted.slope, fitted.slope + fitted.upper_slope) > 0:
        return fitted
    one = LogisticRegression(C=1e6).fit(logit.reshape(-1, 1), labels)
    fitted = Platt(float(one.coef_[0, 0]), 0.0, float(one.intercept_[0]))
    if fitted.slope <= 0:
        raise ValueError(
            f"Platt scaling found a slope of {fitted.slope}: the trees' logit does not rank the eval split"
        )
    return fitted


def _probability(logit: np.ndarray | tf.Tensor) -> tf.Tensor:
    """The served probability of a (calibrated) logit, strictly inside (0, 1)."""
    return tf.clip_by_value(tf.sigmoid(tf.cast(logit, tf.float32)), EPSILON, 1 - EPSILON)


def member_metrics(labels: np.ndarray, logit: np.ndarray, threshold: float) -> dict[str, float]:
    """Metrics on the eval split of a logit turned into a probability as the served one is."""
    probability = _probability(logit).numpy()
    return {
        "auc": float(roc_auc_score(labels, probability)),
        "binary_accuracy": float(np.mean((probability >= threshold) == labels)),
        "log_loss": float(log_loss(labels, probability)),
        "expected_calibration_error": calibration.expected_calibration_error(probability, labels),
    }


def _raw_from_json(name: str, value: tf.Tensor, spec: tf.io.FixedLenFeature | tf.io.VarLenFeature):
    """One JSON-friendly 1-D input as the raw tensor TFT expects: NaN or "" marks a missing optional value."""
    if isinstance(spec, tf.io.VarLenFeature):
        present = ~tf.math.is_nan(value) if value.dtype.is_floating else tf.not_equal(value, "")
        indices = tf.where(present)
        return tf.SparseTensor(
            indices=tf.concat([indices, tf.zeros_like(indices)], axis=1),
            values=tf.cast(tf.boolean_mask(value, present), spec.dtype),
            dense_shape=tf.stack([tf.shape(value, out_type=tf.int64)[0], 1]),
        )
    return tf.reshape(tf.cast(value, spec.dtype), [-1, 1])


def export(
    path: str, trees: list[ydf.GenericModel], platt: Platt, tf_transform_output: tft.TFTransformOutput, threshold: float
) -> None:
    """One SavedModel, raw features in: `serving_default` takes them by name (REST-friendly), `serving_examples`
    as tf.Examples (TFMA), `explain` by name, adding reason codes (evaluation/explain.py). The trees run in TF-DF's
    inference op, their files among the SavedModel's assets."""
    root = tf.Module()
    root.tft_layer = tf_transform_output.transform_features_layer()
    raw_spec = tf_transform_output.raw_feature_spec()
    raw_spec.pop(features.LABEL)

    def calibrated_logit(raw: dict) -> tf.Tensor:
        transformed = root.tft_layer(raw)
        transformed.pop(features.LABEL, None)
        logits = [tf.reshape(function(transformed), [-1]) for function in root.trees]
        return platt.calibrated(tf.add_n(logits) / len(logits))

    def decision(logit: tf.Tensor) -> dict[str, tf.Tensor]:
        probability = _probability(logit)
        return {PROBABILITY: probability, "label": tf.cast(probability >= threshold, tf.int64)}

    def from_json(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {name: _raw_from_json(name, value, raw_spec[name]) for name, value in inputs.items()}

    json_spec = {
        f.name: tf.TensorSpec([None], tf.string if f.categorical else tf.float32, name=f.name)
        for f in features.FEATURES
    }
    explain = explainer(lambda inputs: calibrated_logit(from_json(inputs)), model_inputs())

    @tf.function(input_signature=[json_spec], autograph=False)
    def serve_json(inputs):
        return decision(calibrated_logit(from_json(inputs)))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")], autograph=False)
    def serve_examples(serialized):
        return decision(calibrated_logit(tf.io.parse_example(serialized, raw_spec)))

    @tf.function(input_signature=[json_spec], autograph=False)
    def serve_explain(inputs):
        explained = explain(inputs)
        return {**decision(explained[LOGIT]), **explained}

    with tempfile.TemporaryDirectory() as temp:  # the trees' files until the SavedModel has copied them
        root.trees = [
            model.to_tensorflow_function(temp_dir=tempfile.mkdtemp(dir=temp), squeeze_binary_classification=False)
            for model in trees
        ]
        signatures = {"serving_default": serve_json, "serving_examples": serve_examples, EXPLAIN: serve_explain}
        tf.saved_model.save(root, path, signatures=signatures)


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """Train the trees, fit Platt scaling on the eval split, export one SavedModel and the eval split's metrics."""
    seed = fn_args.custom_config.get(SEED_KEY, 0)
    threshold = float(fn_args.custom_config.get(DECISION_THRESHOLD_KEY, 0.5))
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    train_columns = _columns(
        _dataset(
            fn_args.train_files,
            tf_transform_output,
        )
    )
    eval_columns, labels = _columns(
        _dataset(
            fn_args.eval_files,
            tf_transform_output,
        )
    )
    trees = train_trees(train_columns, (eval_columns, labels), seed)
    sizes = [model.num_trees() for model in trees]
    print(f"Trainer: {len(trees)} tree model(s) of {sizes} trees, early-stopped on {len(labels)} eval rows")
    del train_columns

    logits = {"trees": trees_logit(trees, eval_columns)}
    platt = fit_platt(labels, logits["trees"])
    logits["calibrated"] = platt.calibrated(logits["trees"])
    export(fn_args.serving_model_dir, trees, platt, tf_transform_output, threshold)
    recomputed, _ = _columns(_dataset(fn_args.eval_files, tf_transform_output, recompute=True))
    report = {
        "members": {name: member_metrics(labels, logit, threshold) for name, logit in logits.items()},
        # The headline figure: the served model on the eval split with loan_percent_income as intake computes it.
        features.RECOMPUTED: member_metrics(labels, platt.calibrated(trees_logit(trees, recomputed)), threshold),
        "calibration": asdict(platt),
        "tree_models": [model.num_trees() for model in trees],
        "eval_examples": len(labels),
    }
    Path(fn_args.model_run_dir).mkdir(parents=True, exist_ok=True)
    (Path(fn_args.model_run_dir) / MEMBERS_FILE).write_text(json.dumps(report, indent=2))
