"""The TFX module: `preprocessing_fn` for Transform and `run_fn` for Trainer, hyperparameters on top.

Transform: each numeric feature becomes its value scaled to [0, 1] after imputing, clipping and (for long tails)
log-compressing; its quantile bucket; and, for optional features, a missing flag. Categorical features become integer
ids by a vocabulary with one out-of-vocabulary bucket. Values come from `features.py`. One input is derived: the gap
between loan amount / income and the declared loan_percent_income.

Trainer: two members on the Transform output. Gradient-boosted trees (trained with YDF, the library under TensorFlow
Decision Forests, and run by TF-DF's inference op) take the scaled values, flags and category ids; two MLPs trained
side by side embed the buckets and ids, and their logits are averaged. On the eval split, the blend weight of the two
logits is the one with the best AUC, and Platt scaling (a slope and an intercept on the blended logit) calibrates the
blend. Members, blend and calibration are one SavedModel (TF Serving >= 2.11 has TF-DF's ops built in); the final clip
to [EPSILON, 1 - EPSILON] only guards against float rounding. Each member's metrics on the eval split go to
`MEMBERS_FILE` in the Trainer's ModelRun artifact, for the model report.
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
import tf_keras as keras
import ydf
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from tfx import v1 as tfx

from common import features
from common.config import settings
from tfx_modules.evaluation import calibration
from tfx_modules.evaluation.explain import explainer

# Transform
NUM_BUCKETS = 64
NUM_OOV_BUCKETS = 1
BUCKET_SUFFIX = "_bucket"
MISSING_SUFFIX = "_missing"
# A derived input. An amount / income that disagrees with the declared ratio beyond rounding is a classic sign of an
# inconsistent application; on the real data all 421 applications whose gap exceeds 0.006 defaulted.
DECLARED_RATIO_GAP = features.Feature("loan_percent_income_gap", float, clip=(-0.01, 0.1))
# MLP members
EMBEDDING_DIM = 8
HIDDEN_UNITS = (256, 128)
DROPOUT = 0.2
LEARNING_RATE = 3e-3
BATCH_SIZE = 512
MLP_COUNT = 2
MAX_EPOCHS = 60
PATIENCE = 5
# Gradient-boosted trees member (early stopping on the eval split)
TREES = {"num_trees": 1000, "max_depth": 6, "shrinkage": 0.05}  # early stopping keeps ~550-750 on the real data
# Training budget: past these sizes the Trainer's cost stops growing with the data (none applies to the real 26k rows).
EPOCH_EXAMPLES = 1 << 18  # an MLP epoch is at most this many examples of a shuffled stream that repeats over all data
EARLY_STOPPING_EXAMPLES = 1 << 17  # early stopping watches the eval split's first examples (the blend sees all)
TREE_EXAMPLES = 1 << 18  # each tree grows on a fresh random sample of this many rows (stochastic gradient boosting)
PREDICT_BATCH = 1 << 16  # the MLPs score the eval split in slices (activations of the whole split would take GBs)
# Blend and calibration, fitted on the eval split
BLEND_WEIGHTS = tuple(i / 20 for i in range(21))  # candidate weights of the trees' logit; the MLPs' is 1 - w
EPSILON = 1e-6  # float32's sigmoid rounds to exactly 1 above a logit of ~17
# custom_config keys and names
DECISION_THRESHOLD_KEY = "decision_threshold"
DERIVED_INPUTS_KEY = "derived_inputs"
SEED_KEY = "seed"
PROBABILITY = "probability"
LOGIT = "logit"
MLPS = tuple(f"mlp_{i}" for i in range(MLP_COUNT))
MONITOR = f"val_{PROBABILITY}_auc"  # early stopping and LR decay follow the MLP average's AUC on the eval split
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
    """TFT preprocessing: numeric to [0, 1] (+ bucket, + missing flag), categorical to vocabulary ids. The derived
    inputs are left out when `custom_config[DERIVED_INPUTS_KEY]` is false (Transform's custom_config)."""
    used = model_inputs()
    outputs = {
        name: tft.compute_and_apply_vocabulary(
            _dense(inputs[name], ""), num_oov_buckets=NUM_OOV_BUCKETS, vocab_filename=name
        )
        for name in features.CATEGORICAL
        if name in used
    }
    numeric = [(features.BY_NAME[name], inputs[name]) for name in features.NUMERIC if name in used]
    with_derived = (custom_config or {}).get(DERIVED_INPUTS_KEY, True)
    derived = [(feature, compute(inputs)) for feature, compute in DERIVED_INPUTS if with_derived]
    for feature, raw in [*numeric, *derived]:
        name = feature.name
        value, missing = _numeric(feature, raw)
        outputs[name] = tft.scale_to_0_1(value)
        outputs[name + BUCKET_SUFFIX] = tft.bucketize(value, NUM_BUCKETS)
        if feature.optional:
            outputs[name + MISSING_SUFFIX] = missing
    outputs[features.LABEL] = tf.cast(_dense(inputs[features.LABEL], 0), tf.int64)
    return outputs


def _id_sizes(tf_transform_output: tft.TFTransformOutput) -> dict[str, int]:
    """How many ids each integer input can take: vocabulary + OOV for categories, the bucket count for buckets."""
    spec = tf_transform_output.transformed_feature_spec()
    return {
        name: tf_transform_output.vocabulary_size_by_name(name) + NUM_OOV_BUCKETS
        if name in features.CATEGORICAL
        else NUM_BUCKETS
        for name in spec
        if spec[name].dtype == tf.int64 and name != features.LABEL
    }


def _tree_inputs(transformed: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """The trees' inputs: everything but the buckets (a tree finds its own split points)."""
    return {name: value for name, value in transformed.items() if not name.endswith(BUCKET_SUFFIX)}


def _mlp(inputs: dict[str, keras.Input], id_sizes: dict[str, int], name: str) -> tf.Tensor:
    """One MLP's logit, with embeddings of its own: the MLPs differ by initialisation and dropout."""
    encoded = [
        keras.layers.Flatten()(keras.layers.Embedding(id_sizes[key], EMBEDDING_DIM)(value))
        if key in id_sizes
        else value
        for key, value in sorted(inputs.items())
    ]
    x = keras.layers.concatenate(encoded)
    for units in HIDDEN_UNITS:
        x = keras.layers.Dense(units, activation="relu")(x)
        x = keras.layers.Dropout(DROPOUT)(x)
    return keras.layers.Dense(1, name=name)(x)


def build_mlps(tf_transform_output: tft.TFTransformOutput) -> keras.Model:
    """MLP_COUNT MLPs trained side by side, each on its own loss; the average of their logits is the member."""
    spec = tf_transform_output.transformed_feature_spec()
    inputs = {
        name: keras.Input(shape=(1,), name=name, dtype=spec[name].dtype) for name in spec if name != features.LABEL
    }
    id_sizes = _id_sizes(tf_transform_output)
    logits = [_mlp(inputs, id_sizes, name) for name in MLPS]
    logit = keras.layers.average(logits, name=LOGIT) if len(logits) > 1 else logits[0]
    probability = keras.layers.Activation("sigmoid", name=PROBABILITY)(logit)
    model = keras.Model(inputs, {LOGIT: logit, PROBABILITY: probability, **dict(zip(MLPS, logits, strict=True))})
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss=dict.fromkeys(MLPS, keras.losses.BinaryCrossentropy(from_logits=True)),
        metrics={PROBABILITY: [keras.metrics.AUC(name="auc")]},
    )
    return model


def _dataset(
    file_patterns: list[str], tf_transform_output: tft.TFTransformOutput, shuffle: bool, cache: bool = True
) -> tf.data.Dataset:
    """A split's raw examples through the Transform graph as (features, label): cached serialized, then parsed and
    transformed a batch at a time, which costs no more than parsing materialized output would (Transform does not
    write it: at 3.2M rows that pass cost minutes) and trains on exactly what serving computes. Seconds per pass,
    where TFX's generic `data_accessor` spends ~20 s on the first."""
    files = [name for pattern in file_patterns for name in tf.io.gfile.glob(pattern)]
    spec = tf_transform_output.raw_feature_spec()
    transform = tf_transform_output.transform_features_layer()
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if cache:  # for datasets read more than once
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(100_000, seed=0, reshuffle_each_iteration=True)

    def parse(serialized: tf.Tensor) -> tuple[dict, tf.Tensor]:
        transformed = transform(tf.io.parse_example(serialized, spec))
        return transformed, transformed.pop(features.LABEL)

    return dataset.batch(BATCH_SIZE).map(parse, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _skip_autograph(model: keras.Model) -> None:
    """Trace Keras' train and test steps without AutoGraph: the steps have no tensor-dependent Python control flow,
    and AutoGraph's rewriting of Keras' own layer code cost ~25 s of the first epoch here (now ~5 s)."""

    def step(run_step, counter: tf.Variable):
        def function(iterator):
            outputs = run_step(next(iterator))
            with tf.control_dependencies(tf.nest.flatten(outputs)):
                counter.assign_add(1)  # Keras counts steps with it (progress bar, callbacks)
            return outputs

        return tf.function(function, autograph=False)

    model.train_function = step(model.train_step, model._train_counter)
    model.test_function = step(model.test_step, model._test_counter)


def _steps(examples: int, budget: int) -> int | None:
    """Batches per pass when `examples` exceed `budget`; None (a whole pass) otherwise."""
    return math.ceil(budget / BATCH_SIZE) if examples > budget else None


def train_mlps(
    train: tf.data.Dataset,
    evaluation: tf.data.Dataset,
    tf_transform_output: tft.TFTransformOutput,
    sizes: tuple[int, int],
) -> keras.Model:
    """The MLPs, with early stopping on the eval split's AUC of their average. `sizes` (train, eval examples) set the
    budget: past EPOCH_EXAMPLES an epoch is a slice of a stream that goes on over all the data."""
    model = build_mlps(tf_transform_output)
    _skip_autograph(model)

    def targets(x: dict, label: tf.Tensor) -> tuple[dict, dict]:
        return x, dict.fromkeys((PROBABILITY, *MLPS), label)

    callbacks = [
        keras.callbacks.EarlyStopping(MONITOR, mode="max", patience=PATIENCE, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(MONITOR, mode="max", factor=0.5, patience=3),
    ]
    steps = _steps(sizes[0], EPOCH_EXAMPLES)
    model.fit(
        (train.repeat() if steps else train).map(targets),
        steps_per_epoch=steps,
        validation_data=evaluation.map(targets),
        validation_steps=_steps(sizes[1], EARLY_STOPPING_EXAMPLES),
        epochs=MAX_EPOCHS,
        callbacks=callbacks,
        verbose=2,
    )
    return model


def mlp_logit(mlps: keras.Model, columns: dict[str, np.ndarray]) -> np.ndarray:
    """The MLPs' averaged logit of NumPy columns, a slice at a time (one call per slice: Keras' predict() traces for
    seconds)."""
    rows = len(next(iter(columns.values())))
    slices = (
        mlps({name: values[i : i + PREDICT_BATCH] for name, values in columns.items()})[LOGIT].numpy()
        for i in range(0, rows, PREDICT_BATCH)
    )
    return np.concatenate(list(slices)).reshape(-1)


def _columns(dataset: tf.data.Dataset) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A split's transformed features and labels as NumPy columns (YDF trains from memory), joined a column at a
    time with each column's batches let go as it is joined: at 3M rows, one copy of the data at peak, not two."""
    batches = list(dataset.as_numpy_iterator())
    labels = np.concatenate([label for _, label in batches])
    return {name: np.concatenate([x.pop(name) for x, _ in batches]) for name in list(batches[0][0])}, labels


def _tree_sampling(rows: int) -> dict:
    """Past TREE_EXAMPLES rows, each tree grows on a random share of them (YDF's stochastic gradient boosting)."""
    return {"sampling_method": "RANDOM", "subsample": TREE_EXAMPLES / rows} if rows > TREE_EXAMPLES else {}


def train_trees(train: tuple[dict, np.ndarray], evaluation: tuple[dict, np.ndarray], seed: int) -> ydf.GenericModel:
    """Gradient-boosted trees answering a logit, early-stopped on the eval split. YDF is the training library under
    TF-DF (its Keras wrapper spent ~15 s more here reading the data through Keras)."""
    learner = ydf.GradientBoostedTreesLearner(
        label=features.LABEL,
        features=[
            ydf.Feature(name, ydf.Semantic.CATEGORICAL) for name in features.CATEGORICAL if name in model_inputs()
        ],
        include_all_columns=True,
        apply_link_function=False,
        random_seed=seed,
        **TREES,
        **_tree_sampling(len(train[1])),
    )
    train_columns, evaluation_columns = (
        {**_tree_inputs(x), features.LABEL: labels} for x, labels in (train, evaluation)
    )
    return learner.train(train_columns, valid=evaluation_columns, verbose=0)


def _mix(weight: float, trees: np.ndarray | tf.Tensor, mlps: np.ndarray | tf.Tensor):
    return weight * trees + (1 - weight) * mlps


@dataclass(frozen=True)
class Blend:
    """probability = sigmoid(slope * (weight * trees' logit + (1 - weight) * MLPs' logit) + intercept)."""

    weight: float
    slope: float
    intercept: float

    def logit(self, trees: np.ndarray | tf.Tensor, mlps: np.ndarray | tf.Tensor):
        return _mix(self.weight, trees, mlps)

    def calibrated(self, logit: np.ndarray | tf.Tensor):
        return self.slope * logit + self.intercept


def fit_blend(labels: np.ndarray, trees: np.ndarray, mlps: np.ndarray) -> Blend:
    """The weight with the best AUC, then Platt scaling of the blended logit (a logistic regression on it)."""
    weight = max(BLEND_WEIGHTS, key=lambda w: roc_auc_score(labels, _mix(w, trees, mlps)))
    logit = _mix(weight, trees, mlps)
    platt = LogisticRegression(C=1e6).fit(logit.reshape(-1, 1), labels)
    return Blend(weight, float(platt.coef_[0, 0]), float(platt.intercept_[0]))


def _probability(logit: np.ndarray | tf.Tensor) -> tf.Tensor:
    """The served probability of a (calibrated) logit, strictly inside (0, 1)."""
    return tf.clip_by_value(tf.sigmoid(tf.cast(logit, tf.float32)), EPSILON, 1 - EPSILON)


def member_metrics(labels: np.ndarray, logit: np.ndarray, threshold: float) -> dict[str, float]:
    """A member's metrics on the eval split, its logit turned into a probability as the served one is."""
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
    path: str, mlps: keras.Model, trees: ydf.GenericModel, blend: Blend, tf_transform_output, threshold: float
) -> None:
    """One SavedModel, raw features in: `serving_default` takes them by name (REST-friendly), `serving_examples`
    as tf.Examples (TFMA), `explain` by name, adding reason codes (evaluation/explain.py). The trees run in TF-DF's
    inference op, their files among the SavedModel's assets."""
    root = tf.Module()
    root.mlp_variables = mlps.variables  # not the Keras model: saving that would trace every layer's call (~15 s)
    root.tft_layer = tf_transform_output.transform_features_layer()
    raw_spec = tf_transform_output.raw_feature_spec()
    raw_spec.pop(features.LABEL)

    def calibrated_logit(raw: dict) -> tf.Tensor:
        transformed = root.tft_layer(raw)
        transformed.pop(features.LABEL, None)
        return tf.reshape(
            blend.calibrated(blend.logit(root.trees(_tree_inputs(transformed)), mlps(transformed)[LOGIT])), [-1]
        )

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
        root.trees = trees.to_tensorflow_function(temp_dir=temp, squeeze_binary_classification=False)
        signatures = {"serving_default": serve_json, "serving_examples": serve_examples, EXPLAIN: serve_explain}
        tf.saved_model.save(root, path, signatures=signatures)


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """Train both members, fit the blend on the eval split, export one SavedModel and the members' metrics."""
    seed = fn_args.custom_config.get(SEED_KEY, 0)
    threshold = float(fn_args.custom_config.get(DECISION_THRESHOLD_KEY, 0.5))
    keras.utils.set_random_seed(seed)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    evaluation = _dataset(fn_args.eval_files, tf_transform_output, shuffle=False)
    train_columns = _columns(_dataset(fn_args.train_files, tf_transform_output, shuffle=False, cache=False))
    eval_columns, labels = _columns(evaluation)
    mlps = train_mlps(
        _dataset(fn_args.train_files, tf_transform_output, shuffle=True),
        evaluation,
        tf_transform_output,
        (len(train_columns[1]), len(labels)),
    )
    trees = train_trees(train_columns, (eval_columns, labels), seed)
    del train_columns

    logits = {"trees": trees.predict(_tree_inputs(eval_columns)), "mlps": mlp_logit(mlps, eval_columns)}
    blend = fit_blend(labels, logits["trees"], logits["mlps"])
    logits["blend"] = blend.logit(logits["trees"], logits["mlps"])
    logits["calibrated"] = blend.calibrated(logits["blend"])
    export(fn_args.serving_model_dir, mlps, trees, blend, tf_transform_output, threshold)
    report = {
        "members": {name: member_metrics(labels, logit, threshold) for name, logit in logits.items()},
        "blend": asdict(blend),
        "eval_examples": len(labels),
    }
    Path(fn_args.model_run_dir).mkdir(parents=True, exist_ok=True)
    (Path(fn_args.model_run_dir) / MEMBERS_FILE).write_text(json.dumps(report, indent=2))
