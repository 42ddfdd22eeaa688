"""The front door's gRPC side: TF Serving's PredictionService and ModelService forwarded to the live model server.

    python -m serving.gateway --port 8501 --grpc-port 8500 [--grpc-upstream 127.0.0.1:8500] [--routes FILE] ...

It runs in the REST gateway's process and event loop (serving/gateway.py), so both protocols share one routes file,
one prediction log and one metrics page. Calls are forwarded as bytes, unparsed, to the routes file's
`grpc_upstream` (else `--grpc-upstream`), and the upstream's answers and status codes, errors included, pass back
unchanged; server reflection is forwarded too, so grpcurl-style clients work through the gateway. An answered
Predict is decoded after the fact and logged with the version that answered it (the response's model_spec) and the
application ids of the `application-id` request metadata (comma-separated, one per row; others get
`<request id>-<index>`); the ids and the request id come back as trailing metadata. Needs tensorflow-serving-api.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import tensorflow as tf
from starlette.applications import Starlette
from tensorflow_serving.apis import predict_pb2

from serving import gateway, metrics
from serving.grpc_client import ID_METADATA, rows_of
from serving.grpc_server import SERVICES
from serving.prediction_log import Call, PredictionLog

log = logging.getLogger("serving.grpc_gateway")
REQUESTS = "credit_risk_gateway_grpc_requests"  # counter; labels: method, code (gRPC status), upstream
LATENCY = "credit_risk_gateway_grpc_request_latency"  # histogram in microseconds; labels: method, upstream
PREDICT = "/tensorflow.serving.PredictionService/Predict"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
DROPPED_METADATA = {ID_METADATA, "user-agent", "content-type", "te"}


def _features(request: predict_pb2.PredictRequest) -> list[dict[str, Any]]:
    """The request's inputs as one dict of features per row, as REST clients send them."""
    columns = {name: tf.make_ndarray(tensor).tolist() for name, tensor in request.inputs.items()}
    decoded = {k: [v.decode() if isinstance(v, bytes) else v for v in col] for k, col in columns.items()}
    return [dict(zip(decoded, values, strict=True)) for values in zip(*decoded.values(), strict=True)]


class Forwarder(grpc.GenericRpcHandler):
    """Forwards every method of TF Serving's services, and reflection, to the routes' live gRPC upstream."""

    def __init__(self, routes: gateway.Routes, registry: metrics.Registry, prediction_log: PredictionLog | None):
        self.routes, self.registry, self.prediction_log = routes, registry, prediction_log
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._calls: dict[tuple[str, str], Any] = {}  # (upstream, method) -> its multicallable, made once

    def channel(self, address: str) -> grpc.aio.Channel:
        if address not in self._channels:
            self._channels[address] = grpc.aio.insecure_channel(address)
        return self._channels[address]

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method == REFLECTION:
            return grpc.stream_stream_rpc_method_handler(self._stream)
        if method.rsplit("/", 1)[0].lstrip("/") not in SERVICES:
            return None
        return grpc.unary_unary_rpc_method_handler(functools.partial(self._unary, method))

    @staticmethod
    def _metadata(context: grpc.aio.ServicerContext) -> tuple[tuple[str, str], ...]:
        return tuple((k, v) for k, v in context.invocation_metadata() if k not in DROPPED_METADATA)

    async def _unary(self, method: str, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        upstream, start, code = self.routes.grpc_upstream, time.perf_counter(), grpc.StatusCode.OK
        self.routes.in_flight[upstream] += 1
        try:
            call = self._calls.get((upstream, method))
            if call is None:
                call = self._calls[upstream, method] = self.channel(upstream).unary_unary(method)
            answer = await call(request, metadata=self._metadata(context), timeout=context.time_remaining())
            if method == PREDICT and self.prediction_log is not None:
                request_id = uuid.uuid4().hex
                ids = dict(context.invocation_metadata()).get(ID_METADATA, "")
                context.set_trailing_metadata((("x-request-id", request_id),))
                asyncio.get_running_loop().call_soon(self._log, request, answer, ids, request_id, start)
            return answer
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            await context.abort(code, exc.details() or f"Model server unavailable ({upstream})")
        finally:
            self.routes.in_flight[upstream] -= 1
            name = method.rsplit("/", 1)[-1]
            self.registry.inc(REQUESTS, {"method": name, "code": code.name, "upstream": upstream})
            latency = (time.perf_counter() - start) * 1e6
            self.registry.observe(LATENCY, {"method": name, "upstream": upstream}, latency)

    async def _stream(self, requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        call = self.channel(self.routes.grpc_upstream).stream_stream(REFLECTION)(
            requests, metadata=self._metadata(context)
        )
        async for answer in call:
            yield answer

    def _log(self, request: bytes, answer: bytes, ids: str, request_id: str, start: float) -> None:
        """Count the call's predictions and queue them for the prediction log (after the answer went out)."""
        assert self.prediction_log is not None
        parsed, response = (
            predict_pb2.PredictRequest.FromString(request),
            predict_pb2.PredictResponse.FromString(answer),
        )
        instances, predictions = _features(parsed), rows_of(response)
        given = [i for i in ids.split(",") if i]
        app_ids = given if len(given) == len(instances) else [f"{request_id}-{i}" for i in range(len(instances))]
        spec = response.model_spec
        version = spec.version.value if spec.HasField("version") else self.routes.version
        latency_ms = round((time.perf_counter() - start) * 1e3, 3)
        call = Call(time.time(), request_id, spec.name, version, latency_ms, app_ids, instances, predictions)
        gateway.record(self.registry, self.prediction_log, call)


def alongside(
    app: Starlette,
    address: str,
    routes: gateway.Routes,
    registry: metrics.Registry,
    prediction_log: PredictionLog | None,
) -> Starlette:
    """`app` (the REST gateway) with the gRPC gateway listening on `address` for its lifetime."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(started: Starlette) -> AsyncIterator[None]:
        async with inner(started):
            forwarder = Forwarder(routes, registry, prediction_log)
            server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            server.add_generic_rpc_handlers((forwarder,))
            if not server.add_insecure_port(address):
                raise OSError(f"cannot listen on {address}")
            await server.start()
            try:
                yield
            finally:
                await server.stop(5)
                await forwarder.close()

    app.router.lifespan_context = lifespan
    return app
