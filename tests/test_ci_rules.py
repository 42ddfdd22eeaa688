"""What keeps CI from going green by skipping: `testing.environment.require` fails where it would skip as soon as
`CI` is set to anything, and `.ci/run` stops when the Docker engine does not start (its start on a line of its own,
under `set -e`), before any test could skip for the want of it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from common.config import PROJECT_ROOT
from testing.environment import require

CI_RUN = PROJECT_ROOT / ".ci" / "run"


@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_a_missing_requirement_fails_under_any_ci_value(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match=r"^no engine \(CI is set, so this is a failure, not a skip\)$"):
        require(False, "no engine")


@pytest.mark.parametrize("value", [None, ""])
def test_outside_ci_a_missing_requirement_skips_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.skip.Exception, match=r"^no engine$"):
        require(False, "no engine")


def test_a_met_requirement_goes_on_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "1")
    assert require(True, "no engine") is None


def test_ci_stops_when_the_docker_engine_cannot_start(tmp_path: Path) -> None:
    """`.ci/run` up to its engine step (without the set-up before it), with a PATH that has no docker and no
    dockerd: the run fails there, and never reports an engine. Private state and cache folders, so its exit trap
    cannot stop an engine someone else started."""
    lines = CI_RUN.read_text().splitlines()
    step = [line for line in lines[: lines.index("make lint")] if not line.startswith("make setup")]
    script = tmp_path / "ci-engine-step"
    script.write_text("\n".join(step).replace('cd "$(dirname "$0")/.."', f'cd "{PROJECT_ROOT}"') + "\n")
    env = {
        "PATH": str(tmp_path / "empty-bin"),  # no docker, no dockerd
        "HOME": str(tmp_path),
        "CREDIT_RISK_HOME": str(tmp_path / "home"),
        "CREDIT_RISK_CACHE": str(tmp_path / "cache"),
        "DOCKER_HOST": f"unix://{tmp_path / 'no-engine.sock'}",
    }
    result = subprocess.run(["/bin/bash", str(script)], env=env, capture_output=True, text=True, timeout=120)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "docker: the docker CLI is not installed" in result.stderr
    assert "[ci] docker engine" not in result.stdout
    assert "no private dockerd was running" in result.stdout  # the exit trap ran, on the private cache only
