"""The TFX pipeline on Beam's portability layer, the path Flink and Spark take: each Beam job goes to a job server
process and every bundle runs in SDK workers of a separate worker-pool process, two per stage, so whatever cannot be
shipped to remote workers (pickling, the module file, packages) or split across them fails here first."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from data.generate import generate
from testing.beam_portable import portable_runner, workers_started
from tests.conftest import run_train
from tfx_modules.data_gate import dataset

pytestmark = pytest.mark.slow


WORKERS = 2
BEAM_JOBS = 4  # ExampleGen, StatisticsGen, Transform, Evaluator


@pytest.fixture
def beam_args(tmp_path: Path) -> Iterator[str]:
    with portable_runner(tmp_path, WORKERS) as runner:
        yield runner.beam_args


def test_the_pipeline_trains_and_pushes_on_the_portable_runner(beam_args: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    data = dataset.write_canonical(generate(2000, seed=3), tmp_path / "train.csv")
    result = run_train(home, data, env={"CREDIT_RISK_BEAM_ARGS": beam_args})
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    assert "pushed version=" in result.stdout
    # every Beam job reached the job server and got its stages' SDK workers from the pool, two each
    assert (tmp_path / "job_server.log").read_text().count("Completed job in") >= BEAM_JOBS
    assert workers_started(tmp_path) >= WORKERS * BEAM_JOBS
