"""TF Serving's gRPC calls as the tests make them (tests/test_serving_grpc.py locally, tests/test_docker_stack.py
through the compose stack's gateway): one-row requests, each API's call on a channel, its answer as (status code
name, text), and continuous Predict load. Needs tensorflow-serving-api (the ML environment)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving import client, grpc_client


def grpc_answer(target: str, call: Callable[[grpc.Channel], object]) -> tuple[str, str]:
    """(status code name, the answer as text or the error's message) of `call` on a channel to `target`."""
    with grpc.insecure_channel(target) as channel:
        try:
            return "OK", str(call(channel))
        except grpc.RpcError as exc:
            return exc.code().name, exc.details()


def grpc_ready(address: str) -> str:
    """`address` once it takes calls: the gateway starts its gRPC side with its app, just after its ready line."""
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
    return address


def grpc_predict(request: predict_pb2.PredictRequest) -> Callable[[grpc.Channel], object]:
    return lambda channel: prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)


def changed(**inputs: object) -> predict_pb2.PredictRequest:
    """A valid one-row PredictRequest with some inputs replaced (None: removed)."""
    request = grpc_client.predict_request([client.example_row()])
    for name, value in inputs.items():
        if value is None:
            del request.inputs[name]
        else:
            request.inputs[name].CopyFrom(value)
    return request


def with_spec(request: predict_pb2.PredictRequest, signature: str = "", version: int | None = None) -> object:
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    return request


def metadata(channel: grpc.Channel) -> object:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "credit_risk"
    answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(request, timeout=30)
    defs = get_model_metadata_pb2.SignatureDefMap()
    answer.metadata["signature_def"].Unpack(defs)
    return sorted(defs.signature_def)


def model_call(request: Any, stub: Callable[[grpc.Channel], Any], method: str) -> Callable[[grpc.Channel], object]:
    """`method` with `request` for this project's model, as a call on a channel."""
    request.model_spec.name = "credit_risk"
    return lambda channel: getattr(stub(channel), method)(request, timeout=30)


status = model_call(
    get_model_status_pb2.GetModelStatusRequest(), model_service_pb2_grpc.ModelServiceStub, "GetModelStatus"
)
classify = model_call(
    classification_pb2.ClassificationRequest(), prediction_service_pb2_grpc.PredictionServiceStub, "Classify"
)
regress = model_call(regression_pb2.RegressionRequest(), prediction_service_pb2_grpc.PredictionServiceStub, "Regress")


def multi_inference(channel: grpc.Channel) -> object:
    request = inference_pb2.MultiInferenceRequest()
    task = request.tasks.add(method_name="tensorflow/serving/regress")
    task.model_spec.name = "credit_risk"
    return prediction_service_pb2_grpc.PredictionServiceStub(channel).MultiInference(request, timeout=30)


class GrpcLoad:
    """Predict calls back to back from one thread through `address`; the answering versions and the failures."""

    def __init__(self, address: str) -> None:
        self.address, self.versions, self.failures = address, [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> GrpcLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        request = changed()
        with grpc.insecure_channel(self.address) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            while not self._stop.is_set():
                try:
                    self.versions.append(stub.Predict(request, timeout=30).model_spec.version.value)
                except grpc.RpcError as exc:
                    self.failures.append(f"{exc.code().name}: {exc.details()}")
