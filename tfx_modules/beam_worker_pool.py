"""Beam's SDK worker pool from the ML environment, for the portable runner's EXTERNAL environment: the process a
Flink or Spark cluster would run beside each task manager, here on 127.0.0.1 (the portable test and bench/runners.py).

    --runner=PortableRunner --job_endpoint=embed --environment_type=EXTERNAL --environment_config=127.0.0.1:<port>
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tfx_modules.config import PROJECT_ROOT

START_SECONDS = 60.0


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def portable_args(port: int) -> str:
    """CREDIT_RISK_BEAM_ARGS for the portable runner with SDK workers from the pool on `port`. The embedded job
    server asks for one worker per job: Beam reads `--direct_num_workers` only when the FnApiRunner runs a pipeline
    itself, not a job's proto, and `--sdk_worker_parallelism` is for Flink's and Spark's job servers."""
    return (
        "--runner=PortableRunner --job_endpoint=embed --environment_type=EXTERNAL "
        f"--environment_config=127.0.0.1:{port}"
    )


@contextmanager
def worker_pool(port: int, log: Path) -> Iterator[None]:
    """`apache_beam.runners.worker.worker_pool_main` on `port`, logging to `log`; it starts one SDK worker process
    per request, as `python` from PATH: the ML environment's, with this project importable."""
    venv_bin = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "PYTHONPATH": str(PROJECT_ROOT)}
    with log.open("w") as out:
        pool = subprocess.Popen(
            [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + START_SECONDS
            while not _accepts(port):
                if time.monotonic() > deadline or pool.poll() is not None:
                    raise RuntimeError(f"the worker pool did not listen on port {port}; see {log}")
                time.sleep(0.5)
            yield
        finally:
            os.killpg(pool.pid, 15)
            pool.wait(timeout=30)
