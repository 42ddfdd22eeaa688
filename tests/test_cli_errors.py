"""Bad arguments to the make commands get a sentence naming what is wrong, not a Python traceback: a `CONF` that is
not a JSON object (`make run-dag`, `make run-monitor`), a `ROWS` file that is missing or not JSON (`make predict`),
rollout stages, steps or a shadow stage it could not judge (`make rollout`).
Each fails in argument parsing, before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from common.config import PROJECT_ROOT
from testing.harness import AIRFLOW_PYTHON
from tests.conftest import ml_env


def fails_with(command: list[str], home: Path) -> str:
    """Run `command`; it must exit 2 (an argument error) with one sentence on stderr and no traceback."""
    result = subprocess.run(command, env=ml_env(home), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("command", "conf", "message"),
    [
        ("run-dag", "not json", "argument --conf: not JSON (Expecting value: line 1 column 1 (char 0))"),
        ("run-monitor", "[1]", "argument --conf: [1] is not a JSON object of DAG params"),
    ],
)
def test_a_conf_that_is_not_a_json_object_is_named(tmp_path: Path, command: str, conf: str, message: str):
    line = fails_with([str(AIRFLOW_PYTHON), "scripts/airflow_local.py", command, "--conf", conf], tmp_path)
    assert line.startswith(f"airflow_local.py {command}: error: {message}"), line
    assert line.endswith("""e.g. '{"force_retrain": true}'"""), line


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "[Errno 2] No such file or directory"), ("{bad", "Expecting property name enclosed in double quotes")],
)
def test_rows_that_cannot_be_read_are_named(tmp_path: Path, content: str | None, reason: str):
    rows = tmp_path / "rows.json"
    if content is not None:
        rows.write_text(content)
    client = [sys.executable, "-m", "serving.client", "--url", "http://127.0.0.1:9"]
    line = fails_with([*client, "--file", str(rows)], tmp_path)
    assert line.startswith(f"client.py: error: cannot read rows from {rows}: {reason}"), line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shadow-requests", "50"], "shadow requests 50: at least 200 (rollout_min_pairs)"),
        (["--stages", "shadow,linear"], "stages shadow,linear: expected shadow and/or canary, or direct"),
        (["--canary-steps", "50,5"], "canary steps 50,5: expected rising percentages in 1..100"),
    ],
)
def test_a_rollout_that_could_not_judge_is_refused_before_it_begins(tmp_path: Path, args: list[str], message: str):
    """`make rollout` with a shadow stage too short for the score comparison, or stages or steps it does not know."""
    controller = [sys.executable, "-m", "serving.rollout_controller", str(tmp_path / "models" / "credit_risk" / "1")]
    assert fails_with([*controller, *args], tmp_path) == f"rollout failed before it began: {message}"
