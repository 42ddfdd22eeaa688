"""Benchmark of the compose stack on a real Docker engine: image builds, `up --wait`, a container swap under load,
and the gateway's overhead, all in one run.

    python -m bench.compose [--airgap] [--rows N]
    python -m bench.compose --celery [--airgap] [--rows N]   # up and a DAG run on each executor, nothing else

Image build times are those of this run's build: warm (BuildKit's cache) by default; with --cold, on a private
engine with an empty data root and no cached Debian rootfs (the running private engine is stopped first).
The stack is brought down (volumes purged) and up again, the DAG trains on generated rows and deploys, then a copy
of that version is deployed under steady load (failed requests counted; goal 0). The gateway's overhead is
measured from inside the stack's network: sequential single-row predictions from the scheduler container to the
live model container directly and through the gateway, interleaved. Writes bench/results/compose.json.
With --celery, only `up --wait` and the same DAG run are timed, on the LocalExecutor, then on the CeleryExecutor (the
`celery` profile: Redis, two airflow-worker replicas), same code and rows, one after the other, with the containers
that ran the tasks counted; they go under the file's "executors" key and the rest of the file stays.
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

from common.config import settings
from containers import engine
from containers.stack import SCHEDULER, Stack
from data import generate
from serving import client
from testing.loadgen import SteadyLoad

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
    parser.add_argument("--celery", action="store_true", help="up and a DAG run on each executor only")
    args = parser.parse_args(argv)
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.celery:
        results = {**previous, "executors": measure_executors(args)}
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results["executors"], indent=2))
        return
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
    if "executors" in previous:
        results["executors"] = previous["executors"]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


def measure(args: argparse.Namespace, cold: bool) -> dict:
    stack = Stack(args.airgap)
    build_times = stack.build()
    stack.down(purge=True)
    up_seconds = stack.up()
    dag_run = timed_dag_run(stack, args.rows)
    version = int(dag_run["outcome"].split("=")[1].split()[0])
    swap = swap_under_load(stack, version)
    overhead = gateway_overhead(stack)
    return {
        "machine": machine(),
        "airgap": args.airgap,
        "image_build_seconds": build_times,
        "image_build_cold": cold,
        "up_wait_seconds": round(up_seconds, 1),
        "dag_run_in_stack": dag_run,
        "swap_under_load": swap,
        "gateway_overhead": overhead,
    }


def measure_executors(args: argparse.Namespace) -> dict:
    """Each executor on the same code, one after the other: `up --wait` from empty volumes, one DAG run on the same
    rows, and which containers ran its tasks (the scheduler's under the LocalExecutor, the workers' under Celery)."""
    results: dict = {"airgap": args.airgap}
    Stack(args.airgap).build()
    for celery, executor, runner in ((False, "LocalExecutor", SCHEDULER), (True, "CeleryExecutor", "airflow-worker")):
        stack = Stack(args.airgap, celery=celery)
        stack.down(purge=True)
        load_before = os.getloadavg()[0]
        up_seconds = stack.up()
        dag_run = timed_dag_run(stack, args.rows)
        hosts, runners = stack.task_hosts(), stack.hostnames(runner)
        results[executor] = {
            "load_average_before": round(load_before, 1),
            "up_wait_seconds": round(up_seconds, 1),
            "dag_run_in_stack": dag_run,
            f"tasks_per_{runner}": sorted(sum(host == r for host in hosts.values()) for r in runners),
            "tasks_elsewhere": {task: host for task, host in hosts.items() if host not in runners},
        }
    stack.down(purge=True)
    return {"machine": machine(), **results}


def timed_dag_run(stack: Stack, rows: int) -> dict:
    """The DAG triggered over REST on generated rows, as make compose-run does: seconds until it ended, outcome."""
    with tempfile.TemporaryDirectory() as tmp:
        batch = Path(tmp) / "loans.csv"
        generate.generate(rows, seed=7).to_csv(batch, index=False)
        start = time.monotonic()
        outcome = stack.run(batch, {})
    return {"rows": rows, "seconds": round(time.monotonic() - start, 1), "outcome": outcome}


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end"


if __name__ == "__main__":
    main()
