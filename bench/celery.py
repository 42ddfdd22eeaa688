"""Benchmark: one retraining DAG run on Airflow's CeleryExecutor (Redis, two workers) beside the LocalExecutor
on the same batch: the dataset `make run` and bench/runners.py use (the real one when present), or N generated rows.

    python -m bench.celery [--rows N]

Each executor gets a fresh private Airflow (scripts/airflow_local.py: free ports, its own CREDIT_RISK_HOME, a local
model server to deploy to); the run is triggered through the REST API and timed from the DAG run's start to its end as
Airflow records them. Start-up (until the API is healthy) is reported apart. The machine is shared: each entry notes
the 1-minute load average before and after. Writes bench/results/celery.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import tempfile
import time
from datetime import datetime
from pathlib import Path

from common import config
from data.fetch import fetch
from data.generate import generate
from scripts import airflow_local
from testing import airflow_sandbox
from testing.harness import airflow_settings, free_port
from tfx_modules.data_gate import dataset

RESULTS = Path(__file__).resolve().parent / "results" / "celery.json"
EXECUTORS = ("LocalExecutor", "CeleryExecutor")
WORKERS = 2


def _instant(iso: str) -> datetime:
    """The REST API's timestamps end in `Z`, which Python 3.10's fromisoformat does not read."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def timed_run(batch: Path, timeout: float) -> dict:
    """One DAG run on `batch`, triggered over REST on the running Airflow: its duration as Airflow records it (start
    to end), the time from the trigger, and its outcome."""
    start = time.perf_counter()
    run = airflow_local.triggered_run(batch, {}, timeout=timeout)
    return {
        "seconds": round((_instant(run["end_date"]) - _instant(run["start_date"])).total_seconds(), 1),
        "from_trigger_seconds": round(time.perf_counter() - start, 1),
        "outcome": run["outcome"],
    }


def dag_run(executor: str, batch: Path) -> dict:
    """Start a private Airflow with `executor`, run the DAG once on `batch`, stop it; the timings."""
    with tempfile.TemporaryDirectory(prefix=f"bench_{executor}_") as folder:
        home = Path(folder)
        env = {
            **airflow_settings(home),
            "AIRFLOW_EXECUTOR": executor,
            "CREDIT_RISK_CELERY_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
            "CREDIT_RISK_CELERY_WORKERS": str(WORKERS),
            "CREDIT_RISK_STATSD_PORT": str(free_port(socket.SOCK_DGRAM)),
        }
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        with airflow_sandbox.running_airflow(home, env):
            startup = time.perf_counter() - started
            components = sorted(airflow_local.components())
            run = timed_run(batch, timeout=1800)
        return {
            "components": components,
            "run_seconds": run["seconds"],
            "startup_seconds": round(startup, 1),
            "outcome": run["outcome"],
            "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, help="a generated batch of this many rows instead of the dataset")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_celery_batch_") as folder:
        if args.rows:
            frame = generate(args.rows, seed=31)
        else:
            frame = dataset.read_batch(fetch(None, config.PROJECT_ROOT / "data" / "raw", or_generate=True))
        batch = dataset.write_canonical(frame, Path(folder) / "batch.csv")
        results = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "time": time.time(),
            "data": {"source": "generated" if args.rows else "dataset", "rows": len(frame)},
            "celery_workers": WORKERS,
        }
        for executor in EXECUTORS:
            results[executor] = dag_run(executor, batch)
            RESULTS.write_text(json.dumps(results, indent=2) + "\n")  # after each run: a long benchmark
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
