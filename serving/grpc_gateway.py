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
from google.protobuf.message import DecodeError
from starlette.applications import Starlette
from tensorflow_serving.apis import predict_pb2

from serving import gateway, metrics
from serving.grpc_client import ID_METADATA, rows_of
from serving.grpc_server import SERVICES
from serving.prediction_log import Call, PredictionLog
from serving.rollout import GatewayRollout

log = logging.getLogger("serving.grpc_gateway")
REQUESTS = "credit_risk_gateway_grpc_requests"  # counter; labels: method, code (gRPC status), upstream
LATENCY = "credit_risk_gateway_grpc_request_latency"  # histogram in microseconds; labels: method, upstream
PREDICT = "/tensorflow.serving.PredictionService/Predict"
ROLLED_OUT = (PREDICT, "/tensorflow.serving.PredictionService/Classify")  # the calls a rollout routes and mirrors
UPSTREAM_TIMEOUT = 60.0  # seconds: a forwarded call's bound when the client set no deadline (as REST's)
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
DROPPED_METADATA = {ID_METADATA, "user-agent", "content-type", "te"}


def _features(request: predict_pb2.PredictRequest) -> list[dict[str, Any]]:
    """The request's inputs as one dict of features per row, as REST clients send them."""
    columns = {name: tf.make_ndarray(tensor).tolist() for name, tensor in request.inputs.items()}
    decoded = {k: [v.decode() if isinstance(v, bytes) else v for v in col] for k, col in columns.items()}
    return [dict(zip(decoded, values, strict=True)) for values in zip(*decoded.values(), strict=True)]


def forwarded_metadata(context: grpc.aio.ServicerContext) -> tuple[tuple[str, str], ...]:
    """The client's metadata that goes on to the model server (not the application ids, not transport headers)."""
    return tuple((k, v) for k, v in context.invocation_metadata() if k not in DROPPED_METADATA)


class Forwarder(grpc.GenericRpcHandler):
    """Forwards every method of TF Serving's services, and reflection, to the routes' live gRPC upstream; Predict and
    Classify follow a rollout as REST's predict calls do (serving/gateway.py's `rolled_out`)."""

    def __init__(
        self,
        routes: gateway.Routes,
        registry: metrics.Registry,
        prediction_log: PredictionLog | None,
        rollout: GatewayRollout | None = None,
    ) -> None:
        self.routes, self.registry, self.prediction_log, self.rollout = routes, registry, prediction_log, rollout
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._calls: dict[tuple[str, str], Any] = {}  # (upstream, method) -> its multicallable, made once

    def channel(self, address: str) -> grpc.aio.Channel:
        if address not in self._channels:
            self._channels[address] = grpc.aio.insecure_channel(address)
        return self._channels[address]

    def multicallable(self, address: str, method: str) -> Any:
        """The unary call of `method` on `address`, made once per pair."""
        call = self._calls.get((address, method))
        if call is None:
            call = self._calls[address, method] = self.channel(address).unary_unary(method)
        return call

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

    async def _unary(self, method: str, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        # Requests under way are counted by the route's model server, named by its REST URL as for REST calls: the
        # deploy and the rollout controller stop a server once its count is 0, whichever protocol the calls use.
        upstream, grpc_upstream = self.routes.upstream, self.routes.grpc_upstream
        start, code = time.perf_counter(), grpc.StatusCode.OK
        self.routes.in_flight[upstream] += 1
        try:
            leg = _GrpcLeg(self, method, request, context)
            active = self.rollout.active() if self.rollout is not None and method in ROLLED_OUT else None
            if active and active.get("challenger_grpc"):
                addresses = grpc_upstream, str(active["challenger_grpc"])
                return await gateway.rolled_out(leg, leg.first_id, *addresses, active, self.routes, self.rollout)
            answer = await leg.send(grpc_upstream)
            return leg.reply(answer, self.routes.version, None, start) if leg.ok(answer) else leg.refusal(answer)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            await context.abort(code, exc.details() or f"Model server unavailable ({grpc_upstream})")
        finally:
            self.routes.in_flight[upstream] -= 1
            name = method.rsplit("/", 1)[-1]
            self.registry.inc(REQUESTS, {"method": name, "code": code.name, "upstream": grpc_upstream})
            latency = (time.perf_counter() - start) * 1e6
            self.registry.observe(LATENCY, {"method": name, "upstream": grpc_upstream}, latency)

    async def _stream(self, requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        call = self.channel(self.routes.grpc_upstream).stream_stream(REFLECTION)(
            requests, metadata=forwarded_metadata(context)
        )
        async for answer in call:
            yield answer


class _GrpcLeg:
    """One gRPC call as serving/gateway.py's rollout leg: its bytes sent as they came, a failed answer kept as the
    AioRpcError it raised (the champion's is raised again, for _unary to abort with its code)."""

    errors: tuple[type[BaseException], ...] = ()  # every failure is an answer: AioRpcError

    def __init__(self, forwarder: Forwarder, method: str, request: bytes, context: grpc.aio.ServicerContext) -> None:
        self.forwarder, self.method, self.request, self.context = forwarder, method, request, context
        self.metadata = forwarded_metadata(context)
        remaining = context.time_remaining()
        self.timeout = UPSTREAM_TIMEOUT if remaining is None else remaining
        self.request_id = uuid.uuid4().hex
        self.ids = dict(context.invocation_metadata()).get(ID_METADATA, "")
        self.first_id = self.ids.split(",", 1)[0] or f"{self.request_id}-0"  # as REST: the call's first application

    async def send(self, address: str) -> bytes | grpc.aio.AioRpcError:
        try:
            call = self.forwarder.multicallable(address, self.method)
            return await call(self.request, metadata=self.metadata, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            return exc

    def ok(self, answer: bytes | grpc.aio.AioRpcError) -> bool:
        return not isinstance(answer, grpc.aio.AioRpcError)

    def predictions(self, answer: bytes | grpc.aio.AioRpcError) -> list[Any] | None:
        """A Predict answer's rows; another method's success has none to compare ([]), a failure None."""
        if not isinstance(answer, bytes):
            return None
        if self.method != PREDICT:
            return []
        try:
            return rows_of(predict_pb2.PredictResponse.FromString(answer))
        except (DecodeError, ValueError, TypeError):
            return None

    def reply(self, answer: bytes, version: int | None, role: str | None, start: float, shadow: bool = False) -> bytes:
        """The answer, its Predict logged after it went out (with the request id as trailing metadata)."""
        log_to = self.forwarder.prediction_log
        if self.method == PREDICT and log_to is not None:
            if not shadow:
                self.context.set_trailing_metadata((("x-request-id", self.request_id),))
            logged = functools.partial(self._log, log_to, answer, version, role, start, shadow)
            asyncio.get_running_loop().call_soon(logged)
        return answer

    def refusal(self, answer: grpc.aio.AioRpcError) -> bytes:
        raise answer

    def _log(
        self,
        prediction_log: PredictionLog,
        answer: bytes,
        version: int | None,
        role: str | None,
        start: float,
        shadow: bool,
    ) -> None:
        """Count the call's predictions and queue them for the prediction log (after the answer went out)."""
        parsed, response = (
            predict_pb2.PredictRequest.FromString(self.request),
            predict_pb2.PredictResponse.FromString(answer),
        )
        instances, predictions = _features(parsed), rows_of(response)
        given = [i for i in self.ids.split(",") if i]
        app_ids = given if len(given) == len(instances) else [f"{self.request_id}-{i}" for i in range(len(instances))]
        spec = response.model_spec
        answered = spec.version.value if spec.HasField("version") else version
        latency_ms = round((time.perf_counter() - start) * 1e3, 3)
        call = Call(
            time.time(), self.request_id, spec.name, answered, latency_ms, app_ids, instances, predictions, role, shadow
        )
        gateway.record(self.forwarder.registry, prediction_log, call)


def alongside(
    app: Starlette,
    address: str,
    routes: gateway.Routes,
    registry: metrics.Registry,
    prediction_log: PredictionLog | None,
    rollout: GatewayRollout | None = None,
) -> Starlette:
    """`app` (the REST gateway) with the gRPC gateway listening on `address` for its lifetime, following the same
    routes and `rollout`."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(started: Starlette) -> AsyncIterator[None]:
        async with inner(started):
            forwarder = Forwarder(routes, registry, prediction_log, rollout)
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
