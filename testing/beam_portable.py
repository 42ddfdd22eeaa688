"""Beam's portability layer on 127.0.0.1, the path Flink and Spark take: a job server process (the role of Flink's
JobManager) and an SDK worker pool from the ML environment (the process a cluster runs beside each task manager).
The portable test and bench/runners.py run the pipeline on them with

    --runner=PortableRunner --job_endpoint=127.0.0.1:<job port> --environment_type=EXTERNAL
    --environment_config=127.0.0.1:<pool port> --direct_num_workers=<SDK workers per stage>
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common.config import PROJECT_ROOT
from testing.harness import free_port

START_SECONDS = 60.0
WORKER_STARTED = "Starting worker with command"  # the pool's log line for each SDK worker it starts


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@contextmanager
def _service(module: str, port_flag: str, port: int, log: Path) -> Iterator[int]:
    """`python -m module port_flag=port` from the ML environment, logging to `log`, until it listens on `port`; its
    processes (the pool's SDK workers start as `python` from PATH) find this environment and this project. Yields
    its pid."""
    venv_bin = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "PYTHONPATH": str(PROJECT_ROOT)}
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", module, f"{port_flag}={port}"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + START_SECONDS
            while not _accepts(port):
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"{module} did not listen on port {port}; see {log}")
                time.sleep(0.5)
            yield process.pid
        finally:
            os.killpg(process.pid, 15)
            process.wait(timeout=30)


@dataclass(frozen=True)
class PortableRunner:
    beam_args: str  # CREDIT_RISK_BEAM_ARGS for a pipeline on this runner
    pids: tuple[int, int]  # the job server's and the pool's processes (the pool's SDK workers are its children)


@contextmanager
def portable_runner(logs: Path, workers: int) -> Iterator[PortableRunner]:
    """A job server and a worker pool, logging to `logs`/job_server.log and worker_pool.log, whose Beam arguments
    run every stage on `workers` SDK workers from the pool."""
    job_port, pool_port = free_port(), free_port()
    pool = ("apache_beam.runners.worker.worker_pool_main", "--service_port", pool_port, logs / "worker_pool.log")
    job = ("testing.beam_job_server", "--port", job_port, logs / "job_server.log")
    with _service(*job) as job_pid, _service(*pool) as pool_pid:
        beam_args = (
            f"--runner=PortableRunner --job_endpoint=127.0.0.1:{job_port} --environment_type=EXTERNAL "
            f"--environment_config=127.0.0.1:{pool_port} --direct_num_workers={workers}"
        )
        yield PortableRunner(beam_args, (job_pid, pool_pid))


def workers_started(logs: Path) -> int:
    """SDK workers the pool has started, from its log."""
    return (logs / "worker_pool.log").read_text().count(WORKER_STARTED)
