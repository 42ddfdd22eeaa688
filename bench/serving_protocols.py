"""Serving benchmark, protocols: REST against gRPC, directly and through the gateway, and request batching.

    python -m bench.serving_protocols [--model-dir DIR] [--seconds S]

Single-row predict latency (p50/p99) from one client, sequential, for REST and gRPC, directly on the model server
(batching off) and through the gateway (prediction log off, so the figure is the forwarding alone), the four paths
taking turns call by call; the gateway's added p50/p99 per protocol. Then throughput of 32 concurrent single-row
gRPC clients (one asyncio client process) against a server with batching off and one with serving/batching.config
on. Goals: gRPC p99 <= REST p99, the gateway's added gRPC p99 <= 1 ms, batching on >= 1.5 x off. Merges its
figures into bench/results/serving.json under "protocols", with the load average before and after (the machine is
shared).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import grpc
import httpx
from tensorflow_serving.apis import prediction_service_pb2_grpc

from bench.serving_load import publish, summary, timed
from common.config import MODEL_NAME, settings
from serving import client, grpc_client, process
from testing.harness import free_port

CLIENTS = 32
GATEWAY_ADDED_P99_GOAL_MS = 1.0
BATCHING_SPEEDUP_GOAL = 1.5


def grpc_ready(address: str) -> str:
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
    return address


def latencies(targets: dict[str, tuple[str, str]], seconds: float) -> dict[str, dict[str, dict[str, float]]]:
    """Sequential single-row predict calls over each protocol to each (REST URL, gRPC address) target: p50/p99 and
    calls per second. The paths take turns call by call, so that each sees the same share of the shared machine's
    other work (measured one after another, a busy moment lands on one path only)."""
    body = json.dumps({"instances": client.instances([client.example_row()])})
    request = grpc_client.predict_request([client.example_row()])
    calls: dict[tuple[str, str], Callable[[], object]] = {}
    with ExitStack() as stack:
        for where, (rest_url, grpc_address) in targets.items():
            http = stack.enter_context(httpx.Client(base_url=rest_url, timeout=30))
            channel = stack.enter_context(grpc.insecure_channel(grpc_ready(grpc_address)))
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            calls[where, "rest"] = functools.partial(http.post, f"/v1/models/{MODEL_NAME}:predict", content=body)
            calls[where, "grpc"] = functools.partial(stub.Predict, request, timeout=30)
        durations: dict[tuple[str, str], list[float]] = {key: [] for key in calls}
        turns = itertools.cycle(calls.items())
        timed(lambda: _one(next(turns), durations), seconds * len(calls), min_runs=30 * len(calls))
    return {
        where: {protocol: summary(durations[where, protocol][5:], 1) for protocol in ("rest", "grpc")}
        for where in targets
    }


def _one(turn: tuple[tuple[str, str], Callable[[], object]], durations: dict[tuple[str, str], list[float]]) -> None:
    key, call = turn
    start = time.perf_counter()
    answer = call()
    durations[key].append(time.perf_counter() - start)
    if key[1] == "rest":
        answer.raise_for_status()  # type: ignore[attr-defined]


async def _throughput(address: str, seconds: float) -> dict[str, float]:
    request = grpc_client.predict_request([client.example_row()])
    answered, failed = 0, 0
    async with grpc.aio.insecure_channel(address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        await stub.Predict(request, timeout=30)
        end = time.perf_counter() + seconds

        async def one_client() -> None:
            nonlocal answered, failed
            while time.perf_counter() < end:
                try:
                    await stub.Predict(request, timeout=30)
                    answered += 1
                except grpc.aio.AioRpcError:
                    failed += 1

        start = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(CLIENTS)))
        elapsed = time.perf_counter() - start
    return {"answered": answered, "failed": failed, "predictions_per_s": round(answered / elapsed, 1)}


def batch_sizes(rest_url: str) -> dict[str, float]:
    """The mean merged batch size the server's processed_batch_size histogram shows."""
    text = httpx.get(f"{rest_url}/monitoring/prometheus/metrics", timeout=10).text
    values = {
        line.split("{")[0].rsplit("_", 1)[-1]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(":tensorflow:serving:batching_session:processed_batch_size_")
        and "serving_default" in line
        and "_bucket" not in line
    }
    return {"batches": values.get("count", 0), "mean_rows_per_batch": round(values["sum"] / values["count"], 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=settings().model_dir, help="a SavedModel or Pusher dir")
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per path")
    args = parser.parse_args(argv)
    source = process.saved_model_dir(args.model_dir)
    results: dict[str, object] = {"load_average_before": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="serving-protocols-") as tmp, ExitStack() as stack:
        shutil.copytree(source, Path(tmp) / "1")
        plain_grpc, batched_grpc, gateway_grpc = (f"127.0.0.1:{free_port()}" for _ in range(3))
        plain = stack.enter_context(process.local_server(Path(tmp), "--grpc-port", plain_grpc.rsplit(":")[1]))
        batched = stack.enter_context(
            process.local_server(Path(tmp), "--grpc-port", batched_grpc.rsplit(":")[1], "--enable-batching")
        )
        gateway = stack.enter_context(
            process.local_gateway(plain, "--grpc-upstream", plain_grpc, "--grpc-port", gateway_grpc.rsplit(":")[1])
        )
        measured = latencies({"direct": (plain, plain_grpc), "gateway": (gateway, gateway_grpc)}, args.seconds)
        direct, through = measured["direct"], measured["gateway"]
        off = asyncio.run(_throughput(plain_grpc, args.seconds))
        on = asyncio.run(_throughput(batched_grpc, args.seconds))
        on["batching"] = batch_sizes(batched)
    added = {
        protocol: {q: round(through[protocol][q] - direct[protocol][q], 3) for q in ("p50_ms", "p99_ms")}
        for protocol in ("rest", "grpc")
    }
    speedup = round(on["predictions_per_s"] / off["predictions_per_s"], 2)
    results.update(
        {
            "single_row": {"direct": direct, "gateway": through, "gateway_added": added},
            f"throughput_{CLIENTS}_clients_single_row_grpc": {"batching_off": off, "batching_on": on},
            "batching_speedup": speedup,
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "met": {
                "grpc_p99_at_most_rest_direct": direct["grpc"]["p99_ms"] <= direct["rest"]["p99_ms"],
                "grpc_p99_at_most_rest_gateway": through["grpc"]["p99_ms"] <= through["rest"]["p99_ms"],
                "gateway_added_grpc_p99_ms": added["grpc"]["p99_ms"] <= GATEWAY_ADDED_P99_GOAL_MS,
                "batching_speedup": speedup >= BATCHING_SPEEDUP_GOAL,
                "no_failed_calls": off["failed"] == on["failed"] == 0,
            },
        }
    )
    return publish(results, "protocols")


if __name__ == "__main__":
    raise SystemExit(main())
