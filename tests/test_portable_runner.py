"""The TFX pipeline on Beam's portability layer, the path Flink and Spark take: the job runs in an embedded job
server and every bundle in SDK workers of a separate worker-pool process, so whatever cannot be shipped to remote
workers (pickling, the module file, packages) fails here first."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from data.generate import generate
from monitoring.testing import free_port
from tests.conftest import run_train
from tfx_modules import dataset
from tfx_modules.beam_worker_pool import portable_args, worker_pool

pytestmark = pytest.mark.slow


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port, log = free_port(), tmp_path / "worker_pool.log"
    with worker_pool(port, log):
        yield port, log


def test_the_pipeline_trains_and_pushes_on_the_portable_runner(pool: tuple[int, Path], tmp_path: Path) -> None:
    port, pool_log = pool
    home = tmp_path / "home"
    data = dataset.write_canonical(generate(2000, seed=3), tmp_path / "train.csv")
    result = run_train(home, data, env={"CREDIT_RISK_BEAM_ARGS": portable_args(port)})
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    assert "pushed version=" in result.stdout
    # each Beam-running component's job got SDK workers from the pool (ExampleGen, StatisticsGen, Transform, ...)
    assert pool_log.read_text().count("Starting worker with command") >= 4
