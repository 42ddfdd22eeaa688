"""Raw loan rows to TF Serving's gRPC PredictionService and back (`python -m serving.client --grpc HOST:PORT`).

Each feature is one tensor of shape [rows]: numbers as DT_FLOAT, categories as DT_STRING; a missing optional feature
is NaN. Application ids go in the `application-id` request metadata (comma-separated, one per row): the gateway logs
them with the predictions. Needs tensorflow-serving-api (the ML environment).
"""

from __future__ import annotations

import math
from typing import Any

import grpc
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from common import features
from common.config import MODEL_NAME
from serving.predict_exchange import GRPC_ID_METADATA as ID_METADATA

Row = dict[str, Any]


def predict_request(
    rows: list[Row], model: str = MODEL_NAME, version: int | None = None, signature: str = ""
) -> predict_pb2.PredictRequest:
    """A PredictRequest for raw rows (the label and unknown keys left out)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = model, signature
    if version is not None:
        request.model_spec.version.value = version
    for f in features.FEATURES:
        values = [row.get(f.name) for row in rows]
        if f.categorical:
            request.inputs[f.name].CopyFrom(tf.make_tensor_proto(values, tf.string))
        else:
            numbers = [math.nan if v is None else float(v) for v in values]
            request.inputs[f.name].CopyFrom(tf.make_tensor_proto(numbers, tf.float32))
    return request


def rows_of(response: predict_pb2.PredictResponse) -> list[Row]:
    """The answer as one dict of outputs per row, strings decoded (as REST's row format gives them)."""
    columns = {name: tf.make_ndarray(tensor).tolist() for name, tensor in response.outputs.items()}
    decoded = {k: [v.decode() if isinstance(v, bytes) else v for v in col] for k, col in columns.items()}
    return [dict(zip(decoded, values, strict=True)) for values in zip(*decoded.values(), strict=True)]


def predict(
    address: str,
    rows: list[Row],
    model: str = MODEL_NAME,
    version: int | None = None,
    ids: list[str] | None = None,
    timeout: float = 10.0,
) -> list[Row]:
    """Predictions for raw rows from the PredictionService at `address` ("host:port"); grpc.RpcError on failure."""
    metadata = ((ID_METADATA, ",".join(ids)),) if ids else None
    with grpc.insecure_channel(address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        return rows_of(stub.Predict(predict_request(rows, model, version), timeout=timeout, metadata=metadata))
