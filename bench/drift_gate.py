"""Benchmark of the retraining DAG: the drift gate on a 32k-row batch, and whole DAG runs with `airflow dags test`.

    python -m bench.drift_gate [--rows N] [--skip-dag-runs]

1. Gate: validation, filing and drift check of one 32k-row batch against a 32k-row baseline, in process
   (`batches.intake`: read, TFDV statistics and anomalies, drift, HTML report); plus the import time a gate task
   pays first in its fresh ML-environment process. Target <= 10 s.
2. A retraining DAG run end to end (`run-dag` on a fresh state directory: no model yet, trains, deploys to the
   local serving stand-in), then a no-drift DAG run end to end (a resample; target <= 30 s).
Writes bench/results/dag.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from data.generate import REAL_ROWS, generate
from scripts import airflow_local
from tfx_modules import config, dataset

RESULTS = Path(__file__).resolve().parent / "results" / "dag.json"
GATE_TARGET_S = 10.0
NO_DRIFT_TARGET_S = 30.0


def gate(home: Path, rows: int) -> dict:
    """Time the gate in this process on a fresh state directory with a recorded baseline."""
    os.environ["CREDIT_RISK_HOME"] = str(home)
    from tfx_modules import batches

    dataset.write_canonical(generate(rows, seed=1), config.settings().incoming_dir / "baseline.csv")
    batches.intake("bench_baseline", None, None)
    training = batches.training_folder("bench_baseline")
    batches.record_model("bench_baseline", {"version": 1, "metrics": {}}, training["batches"])
    dataset.write_canonical(generate(rows, seed=2), config.settings().incoming_dir / "batch.csv")
    start = time.perf_counter()
    record = batches.intake("bench_gate", "batch.csv", None)
    seconds = time.perf_counter() - start
    imports = subprocess.run(
        [
            sys.executable,
            "-c",
            "import time; t = time.perf_counter(); import tfx_modules.batches, "
            "tfx_modules.validation, tfx_modules.drift_report; print(time.perf_counter() - t)",
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
    start = time.perf_counter()
    result = airflow_local.run_dag_process(env, batch)
    seconds = time.perf_counter() - start
    lines = result.stdout.strip().splitlines()
    return {"seconds": round(seconds, 1), "exit_code": result.returncode, "outcome": lines[-1] if lines else ""}


def dag_runs(home: Path) -> dict:
    """A retraining run (no model yet) then a no-drift run, each a whole `airflow dags test` run."""
    first = dataset.write_canonical(generate(REAL_ROWS, seed=11), home / "batches" / "first.csv")
    resample = dataset.write_canonical(generate(3000, seed=12), home / "batches" / "resample.csv")
    with airflow_local.sandbox(home) as sandbox:
        env = {**os.environ, **sandbox}
        retrain = dag_run(env, first)
        no_drift = dag_run(env, resample)
    return {
        "retraining_run": {**retrain, "rows": REAL_ROWS},
        "no_drift_run": {**no_drift, "rows": 3000, "target_seconds": NO_DRIFT_TARGET_S},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=REAL_ROWS)
    parser.add_argument("--skip-dag-runs", action="store_true", help="only the in-process gate")
    args = parser.parse_args()
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "time": time.time()}
    with tempfile.TemporaryDirectory(prefix="bench_gate_") as folder:
        results["gate"] = gate(Path(folder), args.rows)
    print(json.dumps(results["gate"]), flush=True)
    if not args.skip_dag_runs:
        with tempfile.TemporaryDirectory(prefix="bench_dag_") as folder:
            results.update(dag_runs(Path(folder)))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
