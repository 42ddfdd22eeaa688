"""Benchmark of the compose stack on a real Docker engine: image builds, `up --wait`, a container swap under load,
and the gateway's overhead, all in one run.

    python -m bench.compose [--airgap] [--rows N]

Image build times are those of this run's build: warm (BuildKit's cache) by default; with --cold, on a private
engine with an empty data root and no cached Debian rootfs (the running private engine is stopped first).
The stack is brought down (volumes purged) and up again, the DAG trains on generated rows and deploys, then a copy
of that version is deployed under steady load (failed requests counted; goal 0). The gateway's overhead is
measured from inside the stack's network: sequential single-row predictions from the scheduler container to the
live model container directly and through the gateway, interleaved. Writes bench/results/compose.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import httpx

from containers import engine
from containers.stack import Stack
from data import generate
from serving import client
from serving.loadgen import SteadyLoad
from tfx_modules.config import settings

RESULTS = Path(__file__).resolve().parent / "results" / "compose.json"
GATEWAY = "http://127.0.0.1:8501"
LATENCY_PROBE = """
import json, statistics, sys, time, httpx
urls, body, n = json.loads(sys.stdin.readline()), sys.stdin.readline().encode(), 2000
ms = {u: [] for u in urls}
with httpx.Client(timeout=30) as http:
    for i in range(n + 100):
        for u in urls:
            t = time.perf_counter()
            r = http.post(u + "/v1/models/credit_risk:predict", content=body)
            assert r.status_code == 200, r.text
            if i >= 100:
                ms[u].append((time.perf_counter() - t) * 1e3)
q = lambda v, p: round(sorted(v)[int(p * (len(v) - 1))], 3)
print(json.dumps({u: {"requests": len(v), "p50_ms": q(v, .5), "p99_ms": q(v, .99)} for u, v in ms.items()}))
"""


def gateway_overhead(stack: Stack) -> dict:
    slot = httpx.get(f"{GATEWAY}/gateway/status", timeout=10).json()["slot"]
    direct, gateway = f"http://model-{slot}:8501", "http://serving:8501"
    body = json.dumps({"instances": [client.example_row()]})
    stdin = f"{json.dumps([direct, gateway])}\n{body}\n"
    with tempfile.TemporaryFile("w+") as feed:
        feed.write(stdin)
        feed.seek(0)
        figures = json.loads(stack.exec("python", "-c", LATENCY_PROBE, stdin=feed))
    d, g = figures[direct], figures[gateway]
    return {
        "model_server": d,
        "through_gateway": g,
        "added_p50_ms": round(g["p50_ms"] - d["p50_ms"], 3),
        "added_p99_ms": round(g["p99_ms"] - d["p99_ms"], 3),
    }


def swap_under_load(stack: Stack, version: int) -> dict:
    stack.copy_model(version, version + 1)
    body = json.dumps({"instances": [client.example_row()]}).encode()
    with SteadyLoad(GATEWAY, body) as load:
        time.sleep(3)
        start = time.monotonic()
        result = stack.deploy("deploy", "--version", str(version + 1))
        seconds = time.monotonic() - start
        time.sleep(3)
    return {
        "status": result["status"],
        "deploy_seconds": round(seconds, 1),
        "requests": load.ok + len(load.failures),
        "failed_requests": len(load.failures),
        "goal_failed_requests": 0,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--airgap", action="store_true")
    parser.add_argument("--rows", type=int, default=6000, help="generated rows the DAG trains on")
    parser.add_argument("--cold", action="store_true", help="build on an empty private engine (as root)")
    args = parser.parse_args(argv)
    cold_root = None
    if args.cold:
        engine.stop_private()
        cold_root = Path(tempfile.mkdtemp(prefix="cold-", dir=settings().cache_dir))
        os.environ["CREDIT_RISK_CACHE"] = str(cold_root)
        os.environ["DOCKER_HOST"] = engine.start_private()
    try:
        results = measure(args, cold=args.cold)
    finally:
        if cold_root is not None:
            Stack(args.airgap).down(purge=True)
            engine.stop_private()
            shutil.rmtree(cold_root, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


def measure(args: argparse.Namespace, cold: bool) -> dict:
    stack = Stack(args.airgap)
    build_times = stack.build()
    stack.down(purge=True)
    up_seconds = stack.up()
    with tempfile.TemporaryDirectory() as tmp:
        batch = Path(tmp) / "loans.csv"
        generate.generate(args.rows, seed=7).to_csv(batch, index=False)
        start = time.monotonic()
        outcome = stack.run(batch, {})
        dag_seconds = time.monotonic() - start
    version = int(outcome.split("=")[1].split()[0])
    swap = swap_under_load(stack, version)
    overhead = gateway_overhead(stack)
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end",
        "airgap": args.airgap,
        "image_build_seconds": build_times,
        "image_build_cold": cold,
        "up_wait_seconds": round(up_seconds, 1),
        "dag_run_in_stack": {"rows": args.rows, "seconds": round(dag_seconds, 1), "outcome": outcome},
        "swap_under_load": swap,
        "gateway_overhead": overhead,
    }


if __name__ == "__main__":
    main()
