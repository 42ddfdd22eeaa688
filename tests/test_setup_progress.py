"""scripts/setup_env.sh as a person reads it: one progress line per environment (packages done of those pinned and
the time taken) instead of pip's `Collecting ...` per package; pip's messages in `.venvs/<name>/setup.log`; a failed
install shows pip's error in full.

It runs the real script on a copy of the project made of it and a one-package requirement, so the real pip installs
into a fresh virtualenv (Python 3.10, as the ML environment)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from common.config import PROJECT_ROOT

pytestmark = [  # a fresh virtualenv and pip's own upgrade in it: about a minute each
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which("python3.10"), reason="needs python3.10 (the ML environment's)"),
]
SIX = "six==1.17.0"


def setup_env(project: Path, requirement: str, pin: str) -> subprocess.CompletedProcess:
    """`scripts/setup_env.sh ml` in `project`, where requirements/ml.in holds `requirement` pinned by `pin`; its
    output captured (not a terminal: the progress line is printed, not rewritten)."""
    (project / "scripts").mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / "scripts" / "setup_env.sh", project / "scripts")
    (project / "requirements").mkdir(exist_ok=True)
    (project / "requirements" / "ml.in").write_text(f"{requirement}\n")
    (project / "requirements" / "ml.lock").write_text(f"{pin}\n")
    return subprocess.run(
        ["bash", str(project / "scripts" / "setup_env.sh"), "ml"], capture_output=True, text=True, timeout=300
    )


def test_one_progress_line_and_the_log_keeps_pip(tmp_path: Path):
    result = setup_env(tmp_path, "six", SIX)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "Collecting" not in result.stdout and len(lines) <= 6, lines
    assert any(line.startswith("[setup:ml] 1 of 1 packages collected, installed, 0m") for line in lines), lines
    assert lines[-1] == "[setup] ml environment ready" and result.stderr == ""
    log = (tmp_path / ".venvs" / "ml" / "setup.log").read_text()
    assert "six" in log.split("Successfully installed")[0] and "Successfully installed six-1.17.0" in log
    assert (tmp_path / ".venvs" / "ml" / "bin" / "python").exists()


def test_a_failed_install_shows_pips_error_in_full(tmp_path: Path):
    result = setup_env(tmp_path, "six==1.16.0", SIX)  # the requirement and its pin disagree
    assert result.returncode != 0
    assert "[setup] pip install failed in the ml environment" in result.stderr
    assert "ERROR: Cannot install six==1.16.0" in result.stderr and "conflict" in result.stderr, result.stderr
    assert not (tmp_path / ".venvs" / "ml" / ".installed").exists()
