"""Loading the exported model outside TF Serving: its trees member runs in TensorFlow Decision Forests' inference
ops, which TF Serving (>= 2.11) has built in and a Python process gets by importing `tensorflow_decision_forests`."""

from __future__ import annotations

import os

import tensorflow as tf
import tensorflow_decision_forests  # noqa: F401  (registers the ops)


def load(path: str | os.PathLike) -> tf.Module:
    return tf.saved_model.load(str(path))
