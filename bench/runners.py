"""The standalone pipeline on each tested Beam runner, same data, back to back.

    python -m bench.runners

On the dataset `make run` uses (the real one when present, else generated rows): the DirectRunner in memory (the
default below 200k rows), the DirectRunner with WORKERS worker processes, and the portable runner (the path Flink
and Spark take: a job server process and SDK workers from a worker pool, testing/beam_portable.py) with WORKERS
SDK workers for each stage (counted from the pool's log). Each run in a fresh process with its own CREDIT_RISK_HOME;
wall time, peak memory (with the portable runner's services) and component times, and the 1-minute load average
before each. The Celery and LocalExecutor figures are bench/celery.py's.
Writes bench/results/runners.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.pipeline_process import standalone
from common import config
from data.fetch import fetch
from testing.beam_portable import portable_runner, workers_started
from tfx_modules.pipeline import IN_MEMORY, MULTI_PROCESSING

RESULTS = Path(__file__).resolve().parent / "results" / "runners.json"
WORKERS = 2


def measured(name: str, home: Path, data: Path, beam_args: str, also: Sequence[int] = ()) -> dict:
    """One run; its memory includes the process trees under `also` (the portable runner's services)."""
    load = round(os.getloadavg()[0], 2)
    result = standalone(home, data, {"CREDIT_RISK_BEAM_ARGS": beam_args}, also)
    print(f"{name}: {result['seconds']} s", flush=True)
    return {"beam_args": beam_args, "load_average_1min_before": load, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    data = fetch(None, config.PROJECT_ROOT / "data" / "raw", or_generate=True)
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bench_runners_") as folder:
        root = Path(folder)
        direct = "--runner=DirectRunner"
        runs["direct_in_memory"] = measured("in memory", root / "in_memory", data, f"{direct} {IN_MEMORY}")
        runs["direct_multi_processing"] = measured(
            "multi-processing", root / "multi", data, f"{direct} {MULTI_PROCESSING} --direct_num_workers={WORKERS}"
        )
        with portable_runner(root, WORKERS) as portable:
            runs["portable"] = measured("portable", root / "portable", data, portable.beam_args, portable.pids)
        runs["portable"]["sdk_workers_started"] = workers_started(root)
    results = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "time": time.time(),
        "data": data.name,
        "runs": runs,
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({name: run["seconds"] for name, run in runs.items()}, indent=2))


if __name__ == "__main__":
    main()
