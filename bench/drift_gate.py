"""Benchmark of the retraining DAG: the drift gate on a 32k-row batch, and whole DAG runs with `airflow dags test`.

    python -m bench.drift_gate [--rows N] [--skip-dag-runs]

1. Gate: validation, filing and drift check of one 32k-row batch against a 32k-row baseline, in process
   (`intake.intake`: read, TFDV statistics and anomalies, drift, HTML report); plus the import time a gate task
   pays first in its fresh ML-environment process. Target <= 10 s.
2. On the dataset `make run` uses (the real one when present): the standalone pipeline (`tfx_modules.train`'s
   `run_pipeline`, in a process of its own), then a retraining DAG run end to end on the same file (fresh state, no
   ML worker running yet: it starts on demand; deploys to the local serving stand-in). Target: DAG run <= 1.3 x
   the standalone pipeline. Per task: Airflow's duration, the component's own execution time in ML Metadata, and
   the difference (what running it as an Airflow task costs).
3. No-drift DAG runs on samples of the same data: with the worker warm, after stopping it, and with it switched off
   (CREDIT_RISK_ML_WORKER=off: each ML call in a fresh process, as before the worker). Target <= 15 s. Every run
   also reports its tasks' durations and the time outside them (Airflow's own).
4. No-drift runs on a running Airflow (scheduler, LocalExecutor), triggered over REST as the UI does: the path of
   `make up` and the compose stack. No worker running, then warm; timed from the run's start to its end as Airflow
   records them, and from the trigger.
Writes bench/results/dag.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.celery import timed_run
from bench.pipeline_process import standalone
from common import config
from data.fetch import fetch
from data.generate import REAL_ROWS, generate
from testing import airflow_sandbox
from testing.harness import airflow_settings, free_port
from tfx_modules.component_ids import COMPONENT_IDS
from tfx_modules.data_gate import dataset
from tfx_modules.ml_worker import client as ml_client

RESULTS = Path(__file__).resolve().parent / "results" / "dag.json"
GATE_TARGET_S = 10.0
NO_DRIFT_TARGET_S = 15.0
RETRAIN_TARGET_RATIO = 1.3
RESAMPLE_ROWS = 3000


def gate(home: Path, rows: int) -> dict:
    """Time the gate in this process on a fresh state directory with a recorded baseline."""
    os.environ["CREDIT_RISK_HOME"] = str(home)
    from common.records import batch_ledger
    from tfx_modules.data_gate import intake

    dataset.write_canonical(generate(rows, seed=1), config.settings().incoming_dir / "baseline.csv")
    intake.intake("bench_baseline", None, None)
    training = batch_ledger.training_folder("bench_baseline")
    intake.record_model("bench_baseline", {"version": 1, "metrics": {}}, training["batches"])
    dataset.write_canonical(generate(rows, seed=2), config.settings().incoming_dir / "batch.csv")
    start = time.perf_counter()
    record = intake.intake("bench_gate", "batch.csv", None)
    seconds = time.perf_counter() - start
    imports = subprocess.run(
        [
            sys.executable,
            "-c",
            "import time; t = time.perf_counter(); import tfx_modules.data_gate.intake, "
            "tfx_modules.data_gate.validation, tfx_modules.data_gate.drift_report; print(time.perf_counter() - t)",
        ],
        env={**os.environ, "PYTHONPATH": str(config.PROJECT_ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    batch = record["batches"][0]
    return {
        "rows": rows,
        "seconds": round(seconds, 2),
        "import_seconds": round(float(imports.stdout.strip().splitlines()[-1]), 2),
        "target_seconds": GATE_TARGET_S,
        "status": batch["status"],
        "max_drift": round(max(d["value"] for d in batch["drift"].values()), 4),
    }


def dag_run(env: dict[str, str], batch: Path) -> dict:
    """One `run-dag`: wall time, outcome, each task's duration (Airflow's), and the time outside the tasks (the CLI,
    parsing, the in-process execution API: `dags test` runs the tasks one after the other)."""
    start = time.perf_counter()
    result = airflow_sandbox.run_dag_process(env, batch)
    seconds = time.perf_counter() - start
    lines = result.stdout.strip().splitlines()
    home = Path(env["CREDIT_RISK_HOME"])
    record = json.loads((home / "state" / "last_run.json").read_text())
    with sqlite3.connect(home / "airflow" / "airflow.db") as db:
        ran = "SELECT task_id, duration FROM task_instance WHERE run_id = ? AND state IN ('success', 'failed')"
        durations = {task.removeprefix("retrain."): round(d, 2) for task, d in db.execute(ran, (record["run_id"],))}
    return {
        "seconds": round(seconds, 1),
        "exit_code": result.returncode,
        "outcome": lines[-1] if lines else "",
        "task_seconds": durations,
        "outside_tasks_seconds": round(seconds - sum(durations.values()), 1),
    }


def component_overheads(home: Path, durations: dict[str, float]) -> dict:
    """Each component's execution in ML Metadata, and what its Airflow task took beyond that."""
    from tfx_modules.reporting.run_result import component_seconds

    record = json.loads((home / "state" / "last_run.json").read_text())
    os.environ["CREDIT_RISK_HOME"] = str(home)
    executions = component_seconds(config.settings(), record["blessing"]["run_id"])
    overhead = {node: durations[node] - executions[node] for node in COMPONENT_IDS}
    return {
        "component_seconds": {k: round(v, 2) for k, v in executions.items()},
        "component_task_overhead_seconds": {k: round(v, 2) for k, v in overhead.items()},
        "component_task_overhead_total_seconds": round(sum(overhead.values()), 1),
    }


def scheduled_no_drift(home: Path, batches: list[Path]) -> dict:
    """No-drift runs on a running Airflow with `home`'s state: no ML worker (the sandbox stopped it), then warm."""
    env = {**airflow_settings(home), "CREDIT_RISK_STATSD_PORT": str(free_port(socket.SOCK_DGRAM))}
    with airflow_sandbox.running_airflow(home, env):
        cold = timed_run(batches[0], timeout=600)
        ml_client.call("os:getppid")  # starts the worker and waits for its imports
        warm = timed_run(batches[1], timeout=600)
    return {"executor": "LocalExecutor", "ml_worker_stopped": cold, "ml_worker_warm": warm}


def dag_runs(home: Path) -> dict:
    """The standalone pipeline and a retraining DAG run on the same data, then no-drift runs: worker warm, worker
    stopped before the run, worker switched off (every ML call in a fresh process, as the DAG did before)."""
    source = fetch(None, config.PROJECT_ROOT / "data" / "raw", or_generate=True)
    frame = dataset.read_batch(source)
    first = dataset.write_canonical(frame, home / "batches" / "first.csv")
    samples = [
        dataset.write_canonical(frame.sample(RESAMPLE_ROWS, random_state=seed), home / "batches" / f"s{seed}.csv")
        for seed in (1, 2, 3, 4, 5)
    ]
    alone = standalone(home / "standalone", first)
    dag_home = home / "dag"
    with airflow_sandbox.sandbox(dag_home) as sandbox:
        env = {**os.environ, **sandbox}
        retrain = dag_run(env, first)
        components = component_overheads(dag_home, retrain["task_seconds"])
        warm = dag_run(env, samples[0])
        ml_client.stop(dag_home)
        cold = dag_run(env, samples[1])
        ml_client.stop(dag_home)
        off = dag_run({**env, "CREDIT_RISK_ML_WORKER": "off"}, samples[2])
    scheduled = scheduled_no_drift(dag_home, samples[3:])
    no_drift = {"rows": RESAMPLE_ROWS, "target_seconds": NO_DRIFT_TARGET_S}
    return {
        "data": {"source": source.name, "rows": len(frame)},
        "standalone_pipeline": alone,
        "retraining_run": {
            **retrain,
            "ratio_to_standalone": round(retrain["seconds"] / alone["seconds"], 2),
            "target_ratio": RETRAIN_TARGET_RATIO,
            **components,
        },
        "no_drift_run": {**warm, **no_drift, "ml_worker": "warm"},
        "no_drift_run_cold_worker": {**cold, **no_drift, "ml_worker": "stopped before the run"},
        "no_drift_run_worker_off": {**off, **no_drift, "ml_worker": "off: each ML call in a fresh process"},
        "no_drift_run_scheduled": {**no_drift, **scheduled},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=REAL_ROWS)
    parser.add_argument("--skip-dag-runs", action="store_true", help="only the in-process gate")
    args = parser.parse_args()
    load = round(os.getloadavg()[0], 1)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average_1min": load}
    results = {"machine": machine, "time": time.time()}
    with tempfile.TemporaryDirectory(prefix="bench_gate_") as folder:
        results["gate"] = gate(Path(folder), args.rows)
    print(json.dumps(results["gate"]), flush=True)
    if not args.skip_dag_runs:
        with tempfile.TemporaryDirectory(prefix="bench_dag_") as folder:
            results.update(dag_runs(Path(folder)))
        # The machine is shared: how busy it was says how far these figures are from a quiet machine's.
        results["machine"]["load_average_1min_after_dag_runs"] = round(os.getloadavg()[0], 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
