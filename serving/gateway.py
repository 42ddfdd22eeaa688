"""The front door of serving: one URL that speaks TF Serving's REST API and forwards to the live model server.

    python -m serving.gateway --port 8501 --upstream http://127.0.0.1:8502 [--routes var/state/gateway.json]
                              [--prediction-log var/predictions | --no-prediction-log]

Clients keep one address while model servers come and go: the deploy step starts a new model server beside the
live one, checks it, then rewrites the routes file (`{"upstream": url, "version": v, "slot": name}`, replaced
atomically); the gateway re-reads it within `--reload-seconds` and sends every new request to the new server, while
requests already under way finish on the old one. The upstream's answers, errors included, pass through unchanged.
Its own metrics are at /gateway/metrics and its route at /gateway/status; /monitoring/prometheus/metrics is the live
model server's. No TensorFlow here: it runs from either environment.

Every answered predict call is logged (serving/prediction_log.py, sampled by CREDIT_RISK_PREDICTION_LOG_SAMPLE) off
the request path, with the model version that answered: the URL's, else the model server's `X-Model-Version` answer
header (the local server sets it), else the routes file's. Clients may tag instances with `application_id`
(serving/predict_exchange.py): stripped before forwarding, echoed in each prediction, logged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from common.config import settings
from serving import metrics, predict_exchange, process
from serving.prediction_log import Call, PredictionLog
from serving.rollout import GatewayRollout, challenger_answers
from serving.rollout_analysis import Limits

log = logging.getLogger("serving.gateway")
METRICS_PATH = "/monitoring/prometheus/metrics"
REQUESTS = "credit_risk_gateway_requests"  # counter; labels: code (HTTP status), upstream
LATENCY = "credit_risk_gateway_request_latency"  # histogram in microseconds (TF Serving's buckets); label: upstream
SWITCHES = "credit_risk_gateway_route_switches"  # counter: how often the live upstream changed
ROUTE_ERRORS = "credit_risk_gateway_route_errors"  # counter: routes files that could not be read (route kept)
LIVE_VERSION = "credit_risk_gateway_live_version"  # gauge: the model version the routes file names
PREDICTIONS = "credit_risk_gateway_predictions"  # counter: predictions answered; labels: model, version
VERSION_HEADER = "x-model-version"
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade"}


@dataclass
class Routes:
    """Where requests go: the routes file when present, else the default upstream."""

    default: str
    path: Path | None
    upstream: str = ""
    grpc_default: str = ""  # the gRPC gateway's upstream (host:port) when the file names no `grpc_upstream`
    grpc_upstream: str = ""
    version: int | None = None
    slot: str | None = None
    _stamp: tuple[int, int] | None = None
    in_flight: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.upstream, self.grpc_upstream = self.default, self.grpc_default

    def reload(self) -> bool | None:
        """Re-read the routes file if it changed; True when the upstream changed, None when the file is bad (the
        route is kept)."""
        if self.path is None:
            return False
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return False
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            doc = json.loads(self.path.read_text())
            upstream = str(doc["upstream"]).rstrip("/")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("routes file %s is unreadable, keeping %s: %s", self.path, self.upstream, exc)
            return None
        grpc_upstream = str(doc.get("grpc_upstream") or self.grpc_default)
        changed = (upstream, grpc_upstream) != (self.upstream, self.grpc_upstream)
        self.upstream, self.version, self.slot = upstream, doc.get("version"), doc.get("slot")
        self.grpc_upstream = grpc_upstream
        if changed:
            log.info("routing to %s (version %s, slot %s)", upstream, self.version, self.slot)
        return changed

    def status(self) -> dict[str, object]:
        return {
            "upstream": self.upstream,
            "version": self.version,
            "slot": self.slot,
            "in_flight": {k: v for k, v in self.in_flight.items() if v},
        }


def _error(message: str, status: int) -> Response:
    return Response(json.dumps({"error": message}), status_code=status, media_type="application/json")


def _logged(
    exchange: predict_exchange.Exchange,
    answer: httpx.Response,
    route_version: int | None,
    start: float,
    registry: metrics.Registry,
    prediction_log: PredictionLog,
    role: str | None = None,
    shadow: bool = False,
) -> bytes:
    """The answer to send back (ids echoed) after counting its predictions and queueing them for the log."""
    echoed = exchange.answer(answer.content)
    if echoed is None:
        return answer.content
    content, predictions = echoed
    header = answer.headers.get(VERSION_HEADER, "")
    version = exchange.version or (int(header) if header.isdigit() else route_version)
    latency_ms = round((time.perf_counter() - start) * 1e3, 3)
    call = Call(
        time.time(),
        exchange.request_id,
        exchange.model,
        version,
        latency_ms,
        exchange.ids,
        exchange.instances,
        predictions,
        role,
        shadow,
    )
    record(registry, prediction_log, call)
    return content


def record(registry: metrics.Registry, prediction_log: PredictionLog, call: Call) -> None:
    """Count an answered call's predictions and queue it for the prediction log when it is sampled (REST, gRPC)."""
    registry.inc(PREDICTIONS, {"model": call.model, "version": str(call.version)}, len(call.predictions))
    if prediction_log.sampled():
        prediction_log.submit(call)


def _kept_headers(answer: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS}


def _scored(prediction: object) -> tuple[float, int]:
    """(probability, label) of one prediction in either answer format."""
    if isinstance(prediction, dict):
        return float(prediction["probability"]), int(prediction["label"])
    probability = float(prediction)  # type: ignore[arg-type]
    return probability, int(probability >= 0.5)


Logged = Callable[..., bytes]  # build_app's `logged`: (exchange, answer, version, role, start, shadow=False)


class Leg(Protocol):
    """One front end's predict call (REST, gRPC) as a rollout routes it: everything `rolled_out` needs to send it,
    read the answers and reply, so both protocols share one routing, retry, mirroring and judging logic."""

    errors: tuple[type[BaseException], ...]  # a call to a model server that got no answer at all

    async def send(self, address: str) -> Any:
        """The model server's answer at `address` (failed answers included)."""

    def ok(self, answer: Any) -> bool:
        """Whether the answer is a success."""

    def predictions(self, answer: Any) -> list[Any] | None:
        """One prediction per instance of a successful, readable answer; None otherwise."""

    def reply(self, answer: Any, version: int | None, role: str, start: float, shadow: bool = False) -> Any:
        """The front end's reply to a successful answer, logged with its version and role (shadow: log only)."""

    def refusal(self, answer: Any) -> Any:
        """The front end's reply to the champion's failed answer."""


_MIRRORS: set[asyncio.Task[None]] = set()  # shadow calls under way (a task without a reference may be collected)


async def rolled_out(
    leg: Leg,
    first_id: str,
    champion: str,
    challenger: str,
    active: dict[str, Any],
    routes: Routes,
    rollout: GatewayRollout,
) -> Any:
    """A predict call during a rollout, `champion` and `challenger` the protocol's addresses. Canary: the challenger
    answers the applications `challenger_answers` picks (by the first id of the call); any failure of its answer is
    retried on the champion, so no client sees it. Shadow: the champion answers; a copy of the call goes to the
    challenger in the background, and both answers are logged (roles champion and challenger) and compared. A
    champion's call that got no answer raises `leg.errors`, for the front end to handle."""
    challenger_failed = False
    weight = float(active.get("weight") or 0)
    if active["stage"] == "canary" and challenger_answers(active["id"], first_id, weight):
        sent = time.perf_counter()
        routes.in_flight[active["challenger"]] += 1  # the controller stops the challenger once this is 0
        try:
            answer = await leg.send(challenger)
            challenger_failed = leg.predictions(answer) is None
        except leg.errors:
            challenger_failed = True
        finally:
            routes.in_flight[active["challenger"]] -= 1
        if not challenger_failed:
            rollout.answered("challenger", time.perf_counter() - sent, True)
            return leg.reply(answer, active.get("version"), "challenger", sent)
    sent = time.perf_counter()
    answer = await leg.send(champion)
    ok = leg.ok(answer)
    rollout.answered("champion", time.perf_counter() - sent, ok)
    if challenger_failed and ok:  # the call was good: the challenger's failure counts
        rollout.answered("challenger", time.perf_counter() - sent, False)
    if ok and active["stage"] == "shadow" and random.random() < float(active.get("shadow_share", 1.0)):
        task = asyncio.create_task(_mirror(leg, challenger, active, answer, rollout))
        _MIRRORS.add(task)
        task.add_done_callback(_MIRRORS.discard)
    if not ok:
        return leg.refusal(answer)
    return leg.reply(answer, routes.version, "champion", sent)


async def _mirror(leg: Leg, challenger: str, active: dict[str, Any], champions: Any, rollout: GatewayRollout) -> None:
    """Shadow: the challenger's answer to a call the champion answered, counted, paired and logged."""
    sent = time.perf_counter()
    try:
        answer = await leg.send(challenger)
    except leg.errors:
        rollout.answered("challenger", time.perf_counter() - sent, False)
        return
    took = time.perf_counter() - sent
    mine, theirs = leg.predictions(answer), leg.predictions(champions)
    rollout.answered("challenger", took, mine is not None)
    if mine is None or theirs is None:
        return
    try:
        for champion, challenger_prediction in zip(theirs, mine, strict=True):
            rollout.stats.paired(_scored(champion), _scored(challenger_prediction))
    except (KeyError, TypeError, ValueError):
        return
    leg.reply(answer, active.get("version"), "challenger", sent, shadow=True)


@dataclass
class _RestLeg:
    """A REST predict call (an Exchange) as a rollout leg."""

    client: httpx.AsyncClient
    path: str
    headers: dict[str, str]
    exchange: predict_exchange.Exchange
    logged: Logged
    errors: tuple[type[BaseException], ...] = (httpx.HTTPError,)

    async def send(self, address: str) -> httpx.Response:
        return await self.client.post(address + self.path, content=self.exchange.body, headers=self.headers)

    def ok(self, answer: httpx.Response) -> bool:
        return answer.status_code == 200

    def predictions(self, answer: httpx.Response) -> list[Any] | None:
        echoed = self.exchange.answer(answer.content) if self.ok(answer) else None
        return echoed[1] if echoed is not None else None

    def reply(
        self, answer: httpx.Response, version: int | None, role: str, start: float, shadow: bool = False
    ) -> Response:
        content = self.logged(self.exchange, answer, version, role, start, shadow)
        headers = {**_kept_headers(answer), "x-request-id": self.exchange.request_id}
        return Response(content, status_code=200, headers=headers)

    def refusal(self, answer: httpx.Response) -> Response:
        return Response(answer.content, status_code=answer.status_code, headers=_kept_headers(answer))


def build_app(
    routes: Routes,
    registry: metrics.Registry,
    reload_seconds: float = 0.1,
    prediction_log: PredictionLog | None = None,
    rollout: GatewayRollout | None = None,
) -> Starlette:
    """The gateway's app; without `prediction_log` it passes predict calls through untouched, and without
    `rollout` it never routes to a challenger."""
    limits = httpx.Limits(max_connections=256, keepalive_expiry=process.UPSTREAM_IDLE_SECONDS)
    client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0), limits=limits)

    async def forward(request: Request) -> Response:
        upstream, route_version = routes.upstream, routes.version
        start = time.perf_counter()
        routes.in_flight[upstream] += 1
        code = 502
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
            body = await request.body()
            exchange = None
            rolling = rollout is not None and rollout.active() is not None
            if (prediction_log is not None or rolling) and request.method == "POST":
                exchange = predict_exchange.parse(request.url.path, body)
            if exchange is not None and rollout is not None and (active := rollout.active()):
                leg = _RestLeg(client, request.url.path, headers, exchange, logged)
                addresses = routes.upstream, active["challenger"]
                return await rolled_out(leg, exchange.ids[0], *addresses, active, routes, rollout)
            answer = await client.request(
                request.method,
                upstream + request.url.path,
                params=request.url.query or None,
                content=exchange.body if exchange else body,
                headers=headers,
            )
            code = answer.status_code
            kept = _kept_headers(answer)
            content = answer.content
            if exchange is not None and code == 200 and prediction_log is not None:
                content = _logged(exchange, answer, route_version, start, registry, prediction_log)

                kept["x-request-id"] = exchange.request_id
            return Response(content, status_code=code, headers=kept)
        except httpx.HTTPError as exc:
            code = 503
            log.warning("upstream %s failed: %s", upstream, exc)
            return _error(f"Model server unavailable ({upstream}): {type(exc).__name__}", 503)
        finally:
            routes.in_flight[upstream] -= 1
            registry.inc(REQUESTS, {"code": str(code), "upstream": upstream})
            registry.observe(LATENCY, {"upstream": upstream}, (time.perf_counter() - start) * 1e6)

    def logged(
        exchange: predict_exchange.Exchange,
        answer: httpx.Response,
        version: int | None,
        role: str,
        start: float,
        shadow: bool = False,
    ) -> bytes:
        """The answer with ids echoed, logged with its role when the gateway keeps a prediction log."""
        if prediction_log is None:
            echoed = exchange.answer(answer.content)
            return echoed[0] if echoed else answer.content
        return _logged(exchange, answer, version, start, registry, prediction_log, role, shadow)

    async def rollout_status(request: Request) -> Response:
        judged = rollout.judge() if rollout is not None else {"state": {}}
        return Response(json.dumps(judged), media_type="application/json")

    async def status(request: Request) -> Response:
        return Response(json.dumps(routes.status()), media_type="application/json")

    async def own_metrics(request: Request) -> Response:
        return Response(registry.render(), media_type="text/plain; version=0.0.4")

    async def watch() -> None:
        while True:
            changed = routes.reload()
            if changed:
                registry.inc(SWITCHES, {})
            elif changed is None:
                registry.inc(ROUTE_ERRORS, {})
            if routes.version is not None:
                registry.set(LIVE_VERSION, {}, float(routes.version))
            if rollout is not None:
                rollout.tick()
            await asyncio.sleep(reload_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        routes.reload()
        if prediction_log is not None:
            prediction_log.start()
        task = asyncio.create_task(watch())
        try:
            yield
        finally:
            task.cancel()
            await client.aclose()
            if prediction_log is not None:
                prediction_log.stop()

    return Starlette(
        routes=[
            Route("/gateway/status", status, methods=["GET"]),
            Route("/gateway/metrics", own_metrics, methods=["GET"]),
            Route("/gateway/rollout", rollout_status, methods=["GET"]),
            Route(METRICS_PATH, forward, methods=["GET"]),
            Route("/v1/{rest:path}", forward, methods=["GET", "POST"]),
        ],
        lifespan=lifespan,
    )


def main(argv: list[str] | None = None) -> None:
    s = settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument("--upstream", default=s.model_server_url, help="the model server before any routes file")
    parser.add_argument("--routes", type=Path, default=None, help="JSON routes file written by the deploy step")
    parser.add_argument("--reload-seconds", type=float, default=0.1)
    parser.add_argument("--rollout", type=Path, default=s.rollout_state, help="the rollout state file it follows")
    log_to = parser.add_mutually_exclusive_group()
    log_to.add_argument("--prediction-log", type=Path, default=s.predictions_dir, help="folder of the log segments")
    log_to.add_argument("--no-prediction-log", action="store_true", help="pass predict calls through untouched")
    parser.add_argument("--grpc-port", type=int, help="serve gRPC too (serving/grpc_gateway.py)")
    parser.add_argument("--grpc-upstream", default="127.0.0.1:8500", help="the gRPC model server before any routes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per forwarded request otherwise
    routes = Routes(args.upstream.rstrip("/"), args.routes, grpc_default=args.grpc_upstream)
    registry = metrics.Registry()
    prediction_log = None
    if not args.no_prediction_log:
        prediction_log = PredictionLog(
            args.prediction_log,
            registry,
            sample=s.prediction_log_sample,
            rotate_bytes=s.prediction_log_rotate_bytes,
            retention_days=s.prediction_log_retention_days,
            capacity=s.prediction_log_queue,
        )
    rollout = GatewayRollout(args.rollout, registry, Limits.of(s))
    app = build_app(routes, registry, args.reload_seconds, prediction_log, rollout)
    ready = f"{process.GATEWAY_PREFIX}to {routes.upstream}"
    if args.grpc_port is not None:
        from serving import grpc_gateway  # grpcio: only a gateway that serves gRPC needs it

        address = f"{args.host}:{args.grpc_port}"
        app = grpc_gateway.alongside(app, address, routes, registry, prediction_log, rollout)
        ready += f" grpc {args.host}:{args.grpc_port}"
    process.serve(app, args.host, args.port, ready)


if __name__ == "__main__":
    main()
