"""The TFX pipeline on Beam's portability layer, the path Flink and Spark take: the job runs in an embedded job
server and every bundle in SDK workers of a separate worker-pool process, so whatever cannot be shipped to remote
workers (pickling, the module file, packages) fails here first."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from data.generate import generate
from monitoring.testing import free_port, wait_for
from tests.conftest import run_train
from tfx_modules import config, dataset

pytestmark = pytest.mark.slow


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture
def worker_pool(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """`apache_beam.runners.worker.worker_pool_main` on a free port: it starts one SDK worker process per request."""
    port = free_port()
    venv_bin = Path(sys.executable).parent  # SDK workers are started as `python` from PATH: the ML environment's
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "PYTHONPATH": str(config.PROJECT_ROOT)}
    log = (tmp_path / "worker_pool.log").open("w")
    pool = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_for(lambda: accepts(port), timeout=60, what="the worker pool's port")
    try:
        yield port, tmp_path / "worker_pool.log"
    finally:
        os.killpg(pool.pid, 15)
        pool.wait(timeout=30)
        log.close()


def test_the_pipeline_trains_and_pushes_on_the_portable_runner(worker_pool: tuple[int, Path], tmp_path: Path) -> None:
    port, pool_log = worker_pool
    home = tmp_path / "home"
    data = dataset.write_canonical(generate(2000, seed=3), tmp_path / "train.csv")
    args = (
        "--runner=PortableRunner --job_endpoint=embed --environment_type=EXTERNAL "
        f"--environment_config=127.0.0.1:{port}"
    )
    result = run_train(home, data, env={"CREDIT_RISK_BEAM_ARGS": args})
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    assert "pushed version=" in result.stdout
    # each Beam-running component's job got SDK workers from the pool (ExampleGen, StatisticsGen, Transform, ...)
    assert pool_log.read_text().count("Starting worker with command") >= 4
