"""Reason codes inside the SavedModel: exact baseline Shapley values over the raw features, and the top reasons.

For n raw features, every coalition S (2^n of them, 2,048 for 11) is scored as one hybrid applicant: the features in
S take the applicant's values, the rest the baseline applicant's (features.BASELINE); coalitions that make the same
applicant (they differ only in features at their baseline value) are scored once. With v(S) the calibrated logit,
feature i's attribution is sum over S without i of |S|! (n - |S| - 1)! / n! * (v(S + i) - v(S)): a fixed matrix
(`shapley_matrix`) times the 2^n logits, all scored in one batched model call. The attributions add up to
v(all) - v(none) = logit(probability) - logit(baseline probability), a feature at its baseline value gets exactly 0,
and the same input always gives the same answer (no sampling).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from common import features

HIGH, LOW, MISSING = range(3)  # which sentence of a Reason applies
VALUE = "{value}"  # in a categorical reason's sentence: the applicant's value
ATTRIBUTIONS = "attributions"
REASON_CODES = "reason_codes"
REASONS = "reasons"
LOGIT = "logit"
BASELINE_LOGIT = "baseline_logit"
# Instances per explain call: each is 2^n model rows, so 32 instances are 65,536 rows (~0.2 GB of activations).
MAX_INSTANCES = 32


def coalitions(n: int) -> np.ndarray:
    """All 2^n coalitions as a [2^n, n] boolean mask; row 0 is the empty one, the last row all features."""
    return (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1 == 1


def shapley_matrix(n: int) -> np.ndarray:
    """The [2^n, n] matrix M with attributions = logits of the coalitions @ M (exact Shapley values)."""
    masks = coalitions(n)
    size = masks.sum(axis=1)
    # A coalition S containing i enters i's value as v(S) with weight (|S|-1)!(n-|S|)!/n!, one without i as -v(S)
    # with weight |S|!(n-|S|-1)!/n!.
    with_i = np.array([math.factorial(s - 1) * math.factorial(n - s) if s else 0 for s in size]) / math.factorial(n)
    without_i = np.array([math.factorial(s) * math.factorial(n - s - 1) if s < n else 0 for s in size])
    without_i = without_i / math.factorial(n)
    return np.where(masks, with_i[:, None], -without_i[:, None])


def _reason_table(names: tuple[str, ...]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """[n, 3] codes, and sentences split around `{value}` (before, after): each feature's HIGH, LOW and MISSING
    reason."""
    codes, before, after = [], [], []
    for name in names:
        reason = features.REASONS[name]
        if features.BY_NAME[name].categorical:
            codes.append([reason.code] * 3)
            sentences = [reason.high] * 3
        else:
            codes.append([f"{reason.code}_HIGH", f"{reason.code}_LOW", f"{reason.code}_MISSING"])
            sentences = [reason.high, reason.low, reason.missing]
        parts = [(*sentence.split(VALUE, 1), "")[:2] for sentence in sentences]
        before.append([head for head, _ in parts])
        after.append([tail for _, tail in parts])
    return tf.constant(codes), tf.constant(before), tf.constant(after)


def _direction(value: tf.Tensor, baseline: float | str) -> tf.Tensor:
    """Which sentence fits each instance's value: HIGH / LOW against the baseline, MISSING for NaN."""
    if value.dtype == tf.string:
        return tf.zeros_like(value, tf.int32) + HIGH
    direction = tf.where(value >= baseline, HIGH, LOW)
    return tf.where(tf.math.is_nan(value), MISSING, direction)


def _reasons(
    attributions: tf.Tensor, inputs: dict[str, tf.Tensor], names: tuple[str, ...]
) -> tuple[tf.Tensor, tf.Tensor]:
    """The features pushing hardest towards default (positive attribution), as codes and sentences; "" pads rows
    with fewer than REASON_COUNT such features."""
    codes, before, after = _reason_table(names)
    top, index = tf.math.top_k(attributions, k=min(features.REASON_COUNT, len(names)), sorted=True)
    direction = tf.stack([_direction(inputs[name], features.BASELINE[name]) for name in names], axis=1)
    picked = tf.stack([index, tf.gather(direction, index, batch_dims=1)], axis=-1)
    values = tf.stack(  # what `{value}` stands for: categorical values only
        [inputs[name] if inputs[name].dtype == tf.string else tf.zeros_like(inputs[name], tf.string) for name in names],
        axis=1,
    )
    sentence = tf.strings.join(
        [tf.gather_nd(before, picked), tf.gather(values, index, batch_dims=1), tf.gather_nd(after, picked)]
    )
    pushes = top > 0
    return tf.where(pushes, tf.gather_nd(codes, picked), ""), tf.where(pushes, sentence, "")


def _baseline(inputs: dict[str, tf.Tensor], name: str) -> tf.Tensor:
    return tf.constant(features.BASELINE[name], inputs[name].dtype)


def _scores(
    logit: Callable[[dict[str, tf.Tensor]], tf.Tensor], inputs: dict[str, tf.Tensor], names: tuple[str, ...]
) -> tf.Tensor:
    """[batch, 2^n] logits of every instance's coalitions, each distinct hybrid applicant scored once: where an
    instance has a feature at its baseline value, the coalitions with and without it are the same applicant (a
    typical application shares 2-5 of the 11 values with the baseline, so 4-32 times fewer rows are scored)."""
    n, count = len(names), 2 ** len(names)
    differs = tf.stack([tf.not_equal(inputs[name], _baseline(inputs, name)) for name in names], axis=1)  # NaN differs
    bits = tf.reduce_sum(tf.cast(differs, tf.int64) * (2 ** tf.range(n, dtype=tf.int64)), axis=1)
    # A coalition's key: the features it takes from the instance that actually differ, per instance.
    coalition = tf.range(count, dtype=tf.int64)
    keys = (
        tf.bitwise.bitwise_and(coalition[None, :], bits[:, None]) + tf.range(tf.size(bits, tf.int64))[:, None] * count
    )
    distinct, index = tf.unique(tf.reshape(keys, [-1]))
    instance, mask = distinct // count, distinct % count
    hybrid = {
        name: tf.where(
            tf.bitwise.bitwise_and(tf.bitwise.right_shift(mask, i), 1) == 1,
            tf.gather(inputs[name], instance),
            _baseline(inputs, name),
        )
        for i, name in enumerate(names)
    }
    unused = {name: tf.gather(value, instance) for name, value in inputs.items() if name not in names}
    return tf.reshape(tf.gather(tf.cast(logit({**hybrid, **unused}), tf.float64), index), [-1, count])


def explainer(logit: Callable[[dict[str, tf.Tensor]], tf.Tensor], names: tuple[str, ...]) -> Callable:
    """A function of raw JSON inputs (by name, 1-D) giving the calibrated logit of the instance and of the baseline,
    the attributions ([batch, 11], in features.FEATURE_NAMES order) and the top reasons. `logit` scores raw JSON
    inputs; `names` are the features the model uses (their 2^n coalitions are scored)."""
    matrix = tf.constant(shapley_matrix(len(names)))

    def explain(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        batch = tf.shape(inputs[names[0]])[0]
        check = tf.debugging.assert_less_equal(
            batch, MAX_INSTANCES, message=f"explain takes at most {MAX_INSTANCES} instances per request"
        )
        with tf.control_dependencies([check]):
            inputs = {name: tf.identity(value) for name, value in inputs.items()}
        scores = _scores(logit, inputs, names)
        attributions = scores @ matrix
        at_baseline = tf.stack([tf.equal(inputs[name], _baseline(inputs, name)) for name in names], axis=1)
        attributions = tf.where(at_baseline, tf.zeros_like(attributions), attributions)
        # One column per raw feature, in the feature spec's order; a feature the model does not use gets 0.
        zeros = tf.zeros_like(attributions[:, 0])
        attributions = tf.stack(
            [attributions[:, names.index(name)] if name in names else zeros for name in features.FEATURE_NAMES],
            axis=1,
        )
        codes, sentences = _reasons(attributions, inputs, features.FEATURE_NAMES)
        return {
            LOGIT: scores[:, -1],
            BASELINE_LOGIT: scores[:, 0],
            ATTRIBUTIONS: attributions,
            REASON_CODES: codes,
            REASONS: sentences,
        }

    return explain
