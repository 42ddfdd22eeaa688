"""Turn a TF Serving REST predict body into input columns, and outputs back into TF Serving's JSON shapes.

Rules follow TF Serving: `"instances"` (a list of objects, one per row) or `"inputs"` (an object of columns), never
both. Beyond what TF Serving checks, optional features (features.OPTIONAL) may be null or absent and become NaN, and
a number must be finite where it is required, so that a missing value never reaches the model silently.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import tensorflow as tf

from common import features


class BadRequest(Exception):
    """Input the model cannot take (TF Serving's INVALID_ARGUMENT, HTTP 400)."""


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)  # accepts the bare NaN that TF Serving's parser accepts
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"JSON Parse error: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest("JSON Value: request body must be a JSON object with 'instances' or 'inputs'")
    return doc


def _convert(name: str, value: Any, dtype: tf.DType, where: str) -> Any:
    if dtype == tf.string:
        if isinstance(value, str):
            return value
        raise BadRequest(f"{where}: '{name}' must be a string, got {json.dumps(value)}")
    if value is None:
        if name in features.OPTIONAL:
            return math.nan
        raise BadRequest(f"{where}: '{name}' is required and cannot be null")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{where}: '{name}' must be a number, got {json.dumps(value)[:64]}")
    try:
        number = float(value)
    except OverflowError:
        raise BadRequest(f"{where}: '{name}' is out of range for {dtype.name}") from None
    if math.isnan(number) and name in features.OPTIONAL:
        return number
    if not math.isfinite(number):
        raise BadRequest(f"{where}: '{name}' must be a finite number, got {value}")
    if dtype.is_integer:
        if not number.is_integer():
            raise BadRequest(f"{where}: '{name}' must be a whole number, got {value}")
        return int(value)
    return number


def _column(name: str, values: list[Any], dtype: tf.DType, where: str) -> np.ndarray:
    converted = [_convert(name, v, dtype, f"{where}[{i}]") for i, v in enumerate(values)]
    if dtype == tf.string:
        return np.array(converted, dtype=object)
    try:
        column = np.array(converted, dtype=dtype.as_numpy_dtype)
    except OverflowError:
        raise BadRequest(f"{where}: '{name}' has a value out of range for {dtype.name}") from None
    if dtype.is_floating and np.isinf(column).any():
        raise BadRequest(f"{where}: '{name}' has a value out of range for {dtype.name}")
    return column


def _check_names(given: set[str], inputs: dict[str, tf.DType], where: str) -> None:
    unknown = sorted(given - set(inputs))
    if unknown:
        raise BadRequest(f"{where}: unknown input(s) {unknown}; the signature takes {sorted(inputs)}")
    missing = sorted(set(inputs) - given - set(features.OPTIONAL))
    if missing:
        raise BadRequest(f"{where}: missing required input(s) {missing}")


def _from_instances(instances: Any, inputs: dict[str, tf.DType]) -> dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise BadRequest("'instances' must be a list of objects, one per row")
    if not instances:
        raise BadRequest("'instances' is empty: send at least one row")
    for i, row in enumerate(instances):
        if not isinstance(row, dict):
            raise BadRequest(f"instances[{i}]: each instance must be an object of named inputs")
        _check_names(set(row), inputs, f"instances[{i}]")
    return {
        name: _column(name, [row.get(name) for row in instances], dtype, "instances") for name, dtype in inputs.items()
    }


def _from_inputs(columns: Any, inputs: dict[str, tf.DType]) -> dict[str, np.ndarray]:
    if not isinstance(columns, dict):
        raise BadRequest("'inputs' must be an object mapping each input name to a list of values")
    _check_names(set(columns), inputs, "inputs")
    lengths = set()
    for name, values in columns.items():
        if not isinstance(values, list):
            raise BadRequest(f"inputs: '{name}' must be a list (the signature takes a batch of shape [-1])")
        lengths.add(len(values))
    if len(lengths) != 1:
        raise BadRequest(f"inputs: all inputs must have the same batch size, got sizes {sorted(lengths)}")
    (size,) = lengths
    if size == 0:
        raise BadRequest("'inputs' is empty: send at least one row")
    return {
        name: _column(name, columns.get(name, [None] * size), dtype, f"inputs.{name}") for name, dtype in inputs.items()
    }


def signature_name(doc: dict[str, Any]) -> str:
    """The signature a predict body asks for ("" = the default one)."""
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise BadRequest(f"'signature_name' must be a string, got {json.dumps(name)[:64]}")
    return name


def parse_predict(doc: dict[str, Any], inputs: dict[str, tf.DType]) -> tuple[str, dict[str, np.ndarray]]:
    """Return ("row" | "columnar", columns) for the signature's inputs, or raise BadRequest."""
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances == has_inputs:
        raise BadRequest("Not formatted correctly: expecting exactly one of 'inputs' or 'instances' keys")
    if has_instances:
        return "row", _from_instances(doc["instances"], inputs)
    return "columnar", _from_inputs(doc["inputs"], inputs)


def _jsonable(value: np.ndarray) -> Any:
    """Nested lists; string outputs (bytes from TensorFlow) as UTF-8 text, as TF Serving writes them."""
    if value.dtype.kind in "OS":
        return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(value).tolist()
    return value.tolist()


def format_outputs(fmt: str, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """TF Serving's shapes: rows of {output: value} (a bare value for one output), or columns."""
    lists = {name: _jsonable(value) for name, value in outputs.items()}
    if fmt == "columnar":
        return {"outputs": next(iter(lists.values())) if len(lists) == 1 else lists}
    if len(lists) == 1:
        return {"predictions": next(iter(lists.values()))}
    names = list(lists)
    return {"predictions": [dict(zip(names, row, strict=True)) for row in zip(*lists.values(), strict=True)]}
