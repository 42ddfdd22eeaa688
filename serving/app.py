"""The ASGI app: TF Serving's REST API (status, metadata, predict) and its Prometheus endpoint.

Paths are matched with TF Serving's own patterns, and every failure answers TF Serving's `{"error": "..."}` with a
4xx, so clients and the deploy step cannot tell this server from the real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import tensorflow as tf
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from serving import batching, inputs, metrics
from serving.model_store import SIGNATURE, ModelStore, NotFound

PREDICT_PATH = re.compile(r"/v1/models/([^/:]+)(?:/versions/(\d+))?:(predict|classify|regress)", re.IGNORECASE)
STATUS_PATH = re.compile(r"/v1/models/([^/:]+)(?:/versions/(\d+))?(/metadata)?", re.IGNORECASE)
METRICS_PATH = "/monitoring/prometheus/metrics"
DISCARD_BYTES = 64 << 20  # how much of an oversized body is read and dropped so that the client gets the 413


class PayloadTooLarge(Exception):
    pass


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status_code=status, media_type="application/json")


def _error(message: str, status: int) -> Response:
    return _json({"error": message}, status)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, or PayloadTooLarge once it is over `limit`.

    An oversized body is still read and dropped (up to DISCARD_BYTES more) before the 413 goes out: a server that
    answers and closes while the client is still sending makes the kernel reset the connection, and the client sees
    the reset instead of the 413. A client that asked `Expect: 100-continue` has sent nothing yet: it gets the 413 at
    once."""
    declared = request.headers.get("content-length", "")
    message = f"Request body {f'of {declared} bytes ' if declared.isdigit() else ''}exceeds the limit of {limit} bytes"
    expects_answer = request.headers.get("expect", "").lower() == "100-continue"
    if expects_answer and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(message)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > limit + DISCARD_BYTES:
            break
    if size > limit:
        raise PayloadTooLarge(message)
    return b"".join(chunks)


def build_app(
    store: ModelStore,
    registry: metrics.Registry,
    max_body_bytes: int,
    poll: bool = True,
    batcher: batching.Batcher | None = None,
) -> Starlette:
    """An app serving `store`; with `poll`, the store's poller runs for the app's lifetime; with `batcher`,
    concurrent predict calls are merged (serving/batching.py)."""

    def status(name: str, version: int | None, metadata: bool) -> Response:
        if not metadata:
            return _json({"model_version_status": store.status(name, version)})
        model = store.get(name, version)
        return _json(
            {
                "model_spec": {"name": name, "signature_name": "", "version": str(model.version)},
                "metadata": {"signature_def": {"signature_def": model.signature_defs}},
            }
        )

    async def predict(body: bytes, name: str, version: int | None, method: str) -> Response:
        model = store.get(name, version)
        doc = inputs.parse_json(body)
        if method.lower() != "predict":
            raise model.unsupported(inputs.signature_name(doc), method.lower())
        signature = model.signature(inputs.signature_name(doc))
        fmt, columns = inputs.parse_predict(doc, signature.inputs)
        if batcher is None:
            outputs = await run_in_threadpool(signature, columns)
        else:
            key = (model.version, inputs.signature_name(doc) or SIGNATURE)
            outputs = await asyncio.wrap_future(batcher.submit(key, signature, columns))
        answer = _json(inputs.format_outputs(fmt, outputs))
        answer.headers["X-Model-Version"] = str(model.version)  # which version answered (the gateway logs it)
        return answer

    async def v1(request: Request) -> Response:
        path = request.url.path
        start = time.perf_counter()
        predicting = PREDICT_PATH.fullmatch(path) if request.method == "POST" else None
        name, code = predicting[1] if predicting else "", "OK"
        try:
            # The whole body first, whatever the answer: one sent while the client still sends ends in a reset.
            body = await _read_body(request, max_body_bytes) if request.method == "POST" else b""
            if predicting:
                return await predict(body, name, int(predicting[2]) if predicting[2] else None, predicting[3])
            if request.method == "GET" and (m := STATUS_PATH.fullmatch(path)):
                return status(m[1], int(m[2]) if m[2] else None, bool(m[3]))
            code = "INVALID_ARGUMENT"
            return _error(f"Malformed request: {request.method} {path}", 400)
        except NotFound as exc:
            code = "NOT_FOUND"
            return _error(str(exc), 404)
        except inputs.BadRequest as exc:
            code = "INVALID_ARGUMENT"
            return _error(str(exc), 400)
        except tf.errors.InvalidArgumentError as exc:  # the graph rejected a value the parser let through
            code = "INVALID_ARGUMENT"
            return _error(exc.message, 400)
        except batching.QueueFull as exc:
            code = "UNAVAILABLE"
            return _error(str(exc), 503)
        except PayloadTooLarge as exc:
            code = "RESOURCE_EXHAUSTED"
            response = _error(str(exc), 413)
            response.headers["Connection"] = "close"  # a body past the discard bound (or never sent) is not read
            return response
        finally:
            if name:
                registry.inc(metrics.REQUEST_COUNT, {"model_name": name, "status": code})
                registry.observe(
                    metrics.REQUEST_LATENCY,
                    {"model_name": name, "API": "predict", "entrypoint": "REST"},
                    (time.perf_counter() - start) * 1e6,
                )

    async def prometheus(request: Request) -> Response:
        return PlainTextResponse(registry.render())

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(f"Malformed request: {request.method} {request.url.path} ({exc.detail})", exc.status_code)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if poll:
            store.start()
        try:
            yield
        finally:
            store.stop()

    return Starlette(
        routes=[
            Route("/v1/{rest:path}", v1, methods=["GET", "POST"]),
            Route(METRICS_PATH, prometheus, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
