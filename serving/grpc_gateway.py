"""The front door's gRPC side: TF Serving's PredictionService and ModelService forwarded to the live model server.

    python -m serving.gateway --port 8501 --grpc-port 8500 [--grpc-upstream 127.0.0.1:8500] [--routes FILE] ...

It runs in the REST gateway's process and event loop (serving/gateway.py), so both protocols share one routes file,
one prediction log and one metrics page. Calls are forwarded as bytes, unparsed, to the routes file's
`grpc_upstream` (else `--grpc-upstream`), and the upstream's answers and status codes, errors included, pass back
unchanged; server reflection is forwarded too, so grpcurl-style clients work through the gateway. An answered
Predict is decoded after the fact and logged with the version that answered it (the response's model_spec) and the
application ids of the `application-id` request metadata (comma-separated, one per row; others get
`<request id>-<index>`); the ids and the request id come back as trailing metadata. Needs grpcio, not TensorFlow:
the messages are read by serving/predict_wire.py (a gateway process with TensorFlow loaded forwarded slower).
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
from starlette.applications import Starlette

from serving import gateway, metrics, predict_wire
from serving.predict_exchange import GRPC_ID_METADATA as ID_METADATA
from serving.prediction_log import Call, PredictionLog
from serving.rollout import GatewayRollout

log = logging.getLogger("serving.grpc_gateway")
REQUESTS = "credit_risk_gateway_grpc_requests"  # counter; labels: method, code (gRPC status), upstream
LATENCY = "credit_risk_gateway_grpc_request_latency"  # histogram in microseconds; labels: method, upstream
SERVICES = ("tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")  # as serving/grpc_server.py
PREDICT = "/tensorflow.serving.PredictionService/Predict"
ROLLED_OUT = (PREDICT, "/tensorflow.serving.PredictionService/Classify")  # the calls a rollout routes and mirrors
UPSTREAM_TIMEOUT = 60.0  # seconds: a forwarded call's bound when the client set no deadline (as REST's)
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
DROPPED_METADATA = {ID_METADATA, "user-agent", "content-type", "te"}


def forwarded(metadata: Any) -> tuple[tuple[str, str], ...]:
    """The client's metadata that goes on to the model server (not the application ids, not transport headers)."""
    return tuple((k, v) for k, v in metadata if k not in DROPPED_METADATA)


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
            requests, metadata=forwarded(context.invocation_metadata() or ())
        )
        async for answer in call:
            yield answer


class _GrpcLeg:
    """One gRPC call as serving/gateway.py's rollout leg: its bytes sent as they came, a failed answer kept as the
    AioRpcError it raised (the champion's is raised again, for _unary to abort with its code)."""

    errors: tuple[type[BaseException], ...] = ()  # every failure is an answer: AioRpcError

    def __init__(self, forwarder: Forwarder, method: str, request: bytes, context: grpc.aio.ServicerContext) -> None:
        self.forwarder, self.method, self.request, self.context = forwarder, method, request, context
        given = context.invocation_metadata() or ()
        self.metadata = forwarded(given)
        self.ids = next((v for k, v in given if k == ID_METADATA), "")
        remaining = context.time_remaining()
        self.timeout = UPSTREAM_TIMEOUT if remaining is None else remaining

    @functools.cached_property
    def request_id(self) -> str:
        """Made only for a call that is logged or rolled out: not every forwarded call needs one."""
        return uuid.uuid4().hex

    @property
    def first_id(self) -> str:
        """The application the canary split goes by: as REST, the call's first (else `<request id>-0`)."""
        return self.ids.split(",", 1)[0] or f"{self.request_id}-0"

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
            return predict_wire.outputs(answer)
        except (ValueError, TypeError, UnicodeDecodeError):
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
        instances, predictions = predict_wire.inputs(self.request), predict_wire.outputs(answer)
        given = [i for i in self.ids.split(",") if i]
        app_ids = given if len(given) == len(instances) else [f"{self.request_id}-{i}" for i in range(len(instances))]
        model, answered = predict_wire.model_spec(answer, 2)
        answered = version if answered is None else answered
        latency_ms = round((time.perf_counter() - start) * 1e3, 3)
        call = Call(
            time.time(), self.request_id, model, answered, latency_ms, app_ids, instances, predictions, role, shadow
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
