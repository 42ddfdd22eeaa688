"""serving/predict_wire.py reads TF Serving's predict messages as TensorFlow does, without TensorFlow: every dtype and
form (tensor_content, the repeated *_val fields, TF's last-value fill) the project's signatures use."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from serving import client, grpc_client, predict_wire

ARRAYS = {
    "float32 with NaN": np.array([1.5, np.nan, -2.25], np.float32),
    "int64": np.array([1, -3, 2**40], np.int64),
    "int32 matrix": np.array([[1, 2], [3, -4]], np.int32),
    "strings": np.array([b"RENT", "é".encode()]),
    "string matrix": np.array([[b"a", b"b"], [b"c", b"d"]]),
    "bool": np.array([True, False]),
    "float64 scalar": np.array(3.5, np.float64),
    "empty": np.zeros((0,), np.float32),
}


def as_tensorflow_reads(proto: object) -> object:
    """make_ndarray().tolist(), strings decoded at every depth."""

    def decoded(value: object) -> object:
        if isinstance(value, list):
            return [decoded(v) for v in value]
        return value.decode() if isinstance(value, bytes) else value

    return decoded(tf.make_ndarray(proto).tolist())


@pytest.mark.parametrize("name", list(ARRAYS))
def test_a_tensor_reads_as_tensorflow_reads_it(name: str) -> None:
    proto = tf.make_tensor_proto(ARRAYS[name])
    got, want = predict_wire.tensor(proto.SerializeToString()), as_tensorflow_reads(proto)
    assert repr(got) == repr(want)  # repr: NaN equals NaN


@pytest.mark.parametrize(
    ("dtype", "field", "values", "shape", "expected"),
    [
        (tf.float32, "float_val", [1.0, 2.5], [2], [1.0, 2.5]),
        (tf.int64, "int64_val", [5, -6], [2], [5, -6]),
        (tf.int32, "int_val", [7], [3], [7, 7, 7]),  # one value fills the shape, as in TensorFlow
        (tf.bool, "bool_val", [True, False], [2], [True, False]),
    ],
)
def test_the_repeated_value_fields_are_read_too(dtype, field, values, shape, expected) -> None:
    proto = tf.make_tensor_proto(np.zeros(shape, dtype.as_numpy_dtype))
    proto.ClearField("tensor_content")
    proto.ClearField(field)
    getattr(proto, field).extend(values)
    assert predict_wire.tensor(proto.SerializeToString()) == expected == as_tensorflow_reads(proto)


def test_a_request_and_a_response_read_as_the_gateway_logs_them() -> None:
    rows = client.generated_rows(3, seed=1)
    request = grpc_client.predict_request(rows, version=7)
    assert predict_wire.model_spec(request.SerializeToString(), 1) == ("credit_risk", 7)
    features = predict_wire.inputs(request.SerializeToString())
    assert [f["loan_grade"] for f in features] == [r["loan_grade"] for r in rows]
    assert [f["loan_amnt"] for f in features] == pytest.approx([float(r["loan_amnt"]) for r in rows])
    response = predict_pb2.PredictResponse()
    response.model_spec.name = "credit_risk"
    response.model_spec.version.value = 0
    response.outputs["probability"].CopyFrom(tf.make_tensor_proto(np.array([0.25, 0.75], np.float32)))
    response.outputs["label"].CopyFrom(tf.make_tensor_proto(np.array([0, 1], np.int64)))
    assert predict_wire.model_spec(response.SerializeToString(), 2) == ("credit_risk", 0)
    answer = predict_wire.outputs(response.SerializeToString())
    assert answer == [{"probability": 0.25, "label": 0}, {"probability": 0.75, "label": 1}]
    assert answer == grpc_client.rows_of(response)


def test_a_message_it_cannot_read_is_a_value_error() -> None:
    proto = tf.make_tensor_proto(np.array([1 + 2j], np.complex64))
    with pytest.raises(ValueError, match="dtype 8 is not read here"):
        predict_wire.tensor(proto.SerializeToString())
    with pytest.raises(ValueError, match="truncated"):
        predict_wire.outputs(b"\x0a\x05ab")
