"""Shared fixtures. The expensive one, `trained_home`, runs the real TFX pipeline once per test session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from common import config
from data.fetch import SHARED_DATASET
from data.generate import generate
from testing.environment import require
from tfx_modules.data_gate import dataset

TRAIN_ROWS = 3000
TRAINING_FIXTURES = {"trained_home", "trained_model"}  # the session's TFX pipeline run


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that needs the session's trained model is `slow`, marked so or not: `make test-fast` never trains.
    Then the files holding a slow test go first, each group in pytest-randomly's shuffled order: `make test`'s xdist
    workers take a file at a time, so the fast files are left to fill in at the end instead of a long file starting
    last while the other worker idles."""
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


def ml_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of an ML-venv subprocess whose state lives under `home`."""
    return {
        **os.environ,
        "CREDIT_RISK_HOME": str(home),
        "PYTHONPATH": str(config.PROJECT_ROOT),
        "TF_USE_LEGACY_KERAS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONWARNINGS": "ignore",
        **extra,
    }


def run_train(home: Path, data: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m tfx_modules.train` in its own process (TFX and Beam keep global state)."""
    return subprocess.run(
        [sys.executable, "-m", "tfx_modules.train", "--data", str(data), *args],
        env=ml_env(home, **(env or {})),
        cwd=config.PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )


def train_recorded(home: Path, training: pd.DataFrame) -> dict:
    """Take `training` in as a batch of `home` and train on it, with the model's lineage recorded as the DAG does
    (CREDIT_RISK_HOME must point at `home`); the lineage entry."""
    from tfx_modules.data_gate import intake

    dataset.write_canonical(training, config.settings().incoming_dir / "training.csv")
    (accepted,) = intake.intake("test-intake", None, None)["batches"]
    result = run_train(home, Path(accepted["path"]), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{")))
    return intake.record_model(outcome["run_id"], outcome, [accepted["sha256"]])


@pytest.fixture(scope="session")
def real_csv() -> Path:
    """The real dataset (`require`: skipped where it is absent, a failure under CI, which must run these)."""
    require(SHARED_DATASET.is_file(), f"the real dataset is not at {SHARED_DATASET}")
    return SHARED_DATASET


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A CREDIT_RISK_HOME in which the pipeline has trained and pushed one model on generated rows, once per session.

    Tests only read it (one run's artifacts, whatever order they run in); one that trains again copies it first.
    A second pipeline run found in it at the end of the session is an error of the session."""
    home = tmp_path_factory.mktemp("trained_home")
    data = dataset.write_canonical(generate(TRAIN_ROWS, seed=7), home / "train.csv")
    result = run_train(home, data)
    assert result.returncode == 0, f"training failed:\n{result.stdout}\n{result.stderr[-5000:]}"
    yield home
    runs = list((home / "pipeline" / "CsvExampleGen" / "examples").iterdir())
    assert len(runs) == 1, f"a test ran the pipeline again in the shared trained_home: {runs}"


@pytest.fixture(scope="session")
def trained_model(trained_home: Path) -> Path:
    """The Pusher's model directory (TF Serving layout: `<dir>/<version>/saved_model.pb`) with one version."""
    model_dir = trained_home / "models" / config.MODEL_NAME
    assert len(list(model_dir.iterdir())) == 1
    return model_dir
