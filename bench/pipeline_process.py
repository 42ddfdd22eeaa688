"""The standalone pipeline as `make train` runs it, in a process of its own, timed and with its peak memory.

TFX and Beam keep global state, so each run gets a fresh interpreter. The time is taken around `run_pipeline` (after
the imports, as the README's pipeline time); the memory is the largest resident set of the whole process tree
(Beam's multi-process mode starts workers), sampled every quarter second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from common import config

SCRIPT = """
import json, sys, time
from pathlib import Path
from common import config
from tfx_modules import train
from tfx_modules.reporting.run_result import component_windows
from tfx_modules.pipeline import beam_args, input_rows
settings = config.settings()
data_root = settings.pipeline_root / "inputs" / "bench"
train.prepare_inputs(Path(sys.argv[1]), data_root)
started = time.monotonic()
outcome = train.run_pipeline(data_root, settings.model_dir, settings)
seconds = time.monotonic() - started
components = component_windows(settings, outcome.run_id)
print(json.dumps({"seconds": seconds, "blessed": outcome.blessed, "components": components,
                  "beam_args": beam_args(input_rows(data_root), settings)}))
"""
SAMPLE_SECONDS = 0.25


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def _watch(pids: Sequence[int], done: threading.Event, samples: list[tuple[float, int]]) -> None:
    """Sample the resident memory of the process trees under `pids`, with the (epoch) time of each sample."""
    try:
        processes = [psutil.Process(pid) for pid in pids]
        while not done.wait(SAMPLE_SECONDS):
            samples.append((time.time(), sum(_tree_rss(process) for process in processes)))
    except psutil.NoSuchProcess:
        return


def peak(samples: list[tuple[float, int]], start: float = 0.0, end: float = float("inf")) -> int:
    """The largest sample from `start` to `end`, widened by a sampling interval: a component shorter than that still
    gets the samples around it."""
    return max((rss for at, rss in samples if start - SAMPLE_SECONDS <= at <= end + SAMPLE_SECONDS), default=0)


def run_measured(
    args: list[str], env: dict[str, str] | None = None, also: Sequence[int] = ()
) -> tuple[str, float, list[tuple[float, int]]]:
    """Run a Python child with `args` (this environment, the project importable, `env` on top); its stdout, wall
    seconds and the resident memory of its process tree over time, with the trees of the processes `also` (the
    services a pipeline uses, such as a portable runner's job server and worker pool)."""
    environment = {**os.environ, "PYTHONPATH": str(config.PROJECT_ROOT), **(env or {})}
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, *args], env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done, samples = threading.Event(), []
    watcher = threading.Thread(target=_watch, args=([child.pid, *also], done, samples), daemon=True)
    watcher.start()
    stdout, stderr = child.communicate()
    done.set()
    watcher.join()
    seconds = time.perf_counter() - start
    if child.returncode != 0:
        raise RuntimeError(f"{args[:2]} failed ({child.returncode}):\n{stderr.decode(errors='replace')[-4000:]}")
    return stdout.decode(), seconds, samples


def standalone(home: Path, data: Path, env: dict[str, str] | None = None, also: Sequence[int] = ()) -> dict:
    """Run the pipeline on `data` with `home` as CREDIT_RISK_HOME (`env` on top); seconds and peak memory, whole
    and per component (the process tree's peak while the component ran, with the trees under `also`)."""
    stdout, process_seconds, samples = run_measured(
        ["-c", SCRIPT, str(data)], {"CREDIT_RISK_HOME": str(home), **(env or {})}, also
    )
    measured = json.loads(stdout.strip().splitlines()[-1])
    windows = measured["components"]
    return {
        "seconds": round(measured["seconds"], 1),
        "process_seconds": round(process_seconds, 1),
        "peak_memory_mb": round(peak(samples) / 2**20),
        "blessed": measured["blessed"],
        "component_seconds": {k: round(end - start, 1) for k, (start, end) in windows.items()},
        "component_peak_memory_mb": {k: round(peak(samples, *window) / 2**20) for k, window in windows.items()},
        "beam_args": measured["beam_args"],
    }
