"""TF Serving's gRPC API on the same model store as REST: PredictionService and ModelService, with reflection.

The servicers are the ones `tensorflow-serving-api` generates; only their methods are written here. Answers and
status codes are TF Serving's: a bad request is INVALID_ARGUMENT with a message saying what is wrong, an unknown
model or version NOT_FOUND (as REST's 404), a full batching queue UNAVAILABLE, a message over the configured size
RESOURCE_EXHAUSTED (gRPC's own check, as in TF Serving and REST's 413); INTERNAL is left to real faults. Every
signature REST serves (`serving_default`, `explain`) is served here; the model has predict signatures only, so
Classify, Regress and MultiInference answer TF Serving's INVALID_ARGUMENT about the signature's method.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from grpc_reflection.v1alpha import reflection
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
)

from common import features
from serving import batching, metrics
from serving.inputs import BadRequest
from serving.model_store import SIGNATURE, LoadedModel, ModelStore, NotFound

SERVICES = (
    prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name,
    model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
)
CODES = {
    NotFound: grpc.StatusCode.NOT_FOUND,
    BadRequest: grpc.StatusCode.INVALID_ARGUMENT,
    tf.errors.InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    batching.QueueFull: grpc.StatusCode.UNAVAILABLE,
}


def requested_version(spec: model_pb2.ModelSpec) -> int | None:
    """The version a ModelSpec names (None: the latest); a label is refused, as no labels are configured."""
    if spec.WhichOneof("version_choice") == "version_label":
        raise BadRequest(f"Unrecognized servable version label: {spec.version_label}")
    return spec.version.value if spec.HasField("version") else None


def _column(name: str, tensor: Any, dtype: tf.DType) -> np.ndarray:
    given = tf.dtypes.as_dtype(tensor.dtype)
    if given != dtype:
        raise BadRequest(f"input '{name}': expects {dtype.name} but {given.name} is provided")
    column = tf.make_ndarray(tensor)
    if column.ndim != 1:
        raise BadRequest(f"input '{name}' has shape {list(column.shape)}: the signature takes a batch of shape [-1]")
    if dtype.is_floating:
        bad = ~np.isfinite(column) & ~(np.isnan(column) if name in features.OPTIONAL else False)
        if bad.any():
            raise BadRequest(f"input '{name}' must be a finite number, got {column[bad][0]}")
    return column


def columns(request: predict_pb2.PredictRequest, inputs: dict[str, tf.DType]) -> batching.Columns:
    """The request's input tensors as the signature's columns (optional features may be left out: NaN), or
    BadRequest with TF Serving's kind of message."""
    given = set(request.inputs)
    extra, missing = sorted(given - set(inputs)), sorted(set(inputs) - given - set(features.OPTIONAL))
    if extra or missing:
        raise BadRequest(
            f"input size does not match signature: {len(given)}!={len(inputs)} len({{{', '.join(sorted(given))}}}) "
            f"!= len({{{', '.join(sorted(inputs))}}}). Sent extra: {{{', '.join(extra)}}}. "
            f"Missing but required: {{{', '.join(missing)}}}."
        )
    sent = {name: _column(name, request.inputs[name], inputs[name]) for name in sorted(given)}
    sizes = {len(c) for c in sent.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise BadRequest(f"inputs must share one batch size of at least 1 row, got sizes {sorted(sizes)}")
    (size,) = sizes
    return {name: sent.get(name, np.full(size, np.nan, inputs[name].as_numpy_dtype)) for name in inputs}


class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer, model_service_pb2_grpc.ModelServiceServicer):
    """Both services over one ModelStore; `batcher` merges concurrent Predict calls when batching is on."""

    def __init__(self, store: ModelStore, registry: metrics.Registry, batcher: batching.Batcher | None) -> None:
        self.store, self.registry, self.batcher = store, registry, batcher

    @contextmanager
    def _answering(self, context: grpc.ServicerContext, model: str, api: str) -> Iterator[None]:
        """Map the model server's errors to TF Serving's status codes, and count the call as REST counts its own."""
        start, code = time.perf_counter(), grpc.StatusCode.OK
        try:
            yield
        except tuple(CODES) as exc:
            code = next(c for kind, c in CODES.items() if isinstance(exc, kind))
            context.abort(code, exc.message if isinstance(exc, tf.errors.OpError) else str(exc))
        except Exception:  # a real fault: gRPC answers it UNKNOWN; counted as what it is, not as OK
            code = grpc.StatusCode.INTERNAL
            raise
        finally:
            self.registry.inc(metrics.REQUEST_COUNT, {"model_name": model, "status": code.name})
            latency = (time.perf_counter() - start) * 1e6
            self.registry.observe(
                metrics.REQUEST_LATENCY, {"model_name": model, "API": api, "entrypoint": "GRPC"}, latency
            )

    def _model(self, spec: model_pb2.ModelSpec) -> LoadedModel:
        return self.store.get(spec.name, requested_version(spec))

    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext) -> Any:
        response = predict_pb2.PredictResponse()
        with self._answering(context, request.model_spec.name, "predict"):
            model = self._model(request.model_spec)
            name = request.model_spec.signature_name or SIGNATURE
            signature = model.signature(name)
            wanted = list(request.output_filter) or None
            cols = columns(request, signature.inputs)
            if self.batcher is None:
                outputs = signature(cols)
            else:
                outputs = self.batcher.submit((model.version, name), signature, cols).result()
            unknown = sorted(set(wanted or ()) - set(outputs))
            if unknown:
                raise BadRequest(f"output tensor alias not found in signature: {unknown[0]}")
            for key in wanted or outputs:
                response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key]))
            response.model_spec.name, response.model_spec.signature_name = request.model_spec.name, name
            response.model_spec.version.value = model.version
            context.set_trailing_metadata((("x-model-version", str(model.version)),))
        return response

    def _unsupported(self, spec: model_pb2.ModelSpec, context: grpc.ServicerContext, method: str) -> None:
        with self._answering(context, spec.name, method):
            raise self._model(spec).unsupported(spec.signature_name, method)

    def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._unsupported(request.model_spec, context, "classify")

    def Regress(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._unsupported(request.model_spec, context, "regress")

    def MultiInference(self, request: Any, context: grpc.ServicerContext) -> Any:
        for task in request.tasks:
            self._unsupported(task.model_spec, context, task.method_name.rsplit("/", 1)[-1])
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "MultiInferenceRequest must have at least one task")

    def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: Any) -> Any:
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        with self._answering(context, request.model_spec.name, "metadata"):
            if list(request.metadata_field) != ["signature_def"]:
                fields = ", ".join(request.metadata_field) or "none"
                raise BadRequest(f"Metadata field(s) {fields} not supported: ask for exactly 'signature_def'")
            model = self._model(request.model_spec)
            defs = json_format.ParseDict(
                {"signature_def": model.signature_defs}, get_model_metadata_pb2.SignatureDefMap()
            )
            response.metadata["signature_def"].Pack(defs)
            response.model_spec.name = request.model_spec.name
            response.model_spec.version.value = model.version
        return response

    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest, context: Any) -> Any:
        with self._answering(context, request.model_spec.name, "status"):
            spec = request.model_spec
            states = self.store.status(spec.name, requested_version(spec))
            return json_format.ParseDict(
                {"model_version_status": states}, get_model_status_pb2.GetModelStatusResponse()
            )

    def HandleReloadConfigRequest(self, request: model_management_pb2.ReloadConfigRequest, context: Any) -> Any:
        """Accepts a config naming this server's one model; a new base_path is served from at once."""
        with self._answering(context, self.store.name, "reload_config"):
            models = list(request.config.model_config_list.config)
            if len(models) != 1 or models[0].name != self.store.name:
                names = [m.name for m in models]
                raise BadRequest(f"this server serves exactly one model, {self.store.name}; the config names {names}")
            if models[0].base_path and Path(models[0].base_path) != self.store.base_dir:
                self.store.base_dir = Path(models[0].base_path)
                self.store.poll_once()
            return model_management_pb2.ReloadConfigResponse()


def start(
    store: ModelStore,
    registry: metrics.Registry,
    batcher: batching.Batcher | None,
    address: str,
    max_message_bytes: int,
    workers: int = 32,
) -> tuple[grpc.Server, int]:
    """Serve both services (and reflection) on `address` ("host:port", port 0: any); returns the server and port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
        options=[("grpc.max_receive_message_length", max_message_bytes), ("grpc.so_reuseport", 0)],
    )
    servicer = Servicer(store, registry, batcher)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(servicer, server)
    reflection.enable_server_reflection((*SERVICES, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(address)
    server.start()
    return server, port
