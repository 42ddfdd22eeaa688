"""Reading settings from environment variables: typed, with defaults, read when asked so tests can relocate state.
Standard library only: both the Airflow and the ML environment import the settings."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
MODEL_NAME = "credit_risk"


def text(name: str, default: str) -> str:
    return os.environ.get(name, default)


def path(name: str, default: Path | None) -> Path | None:
    """An absolute path; symlinks are kept (a venv's bin/python is a symlink and must be run as such)."""
    return Path(os.path.abspath(os.environ[name])) if os.environ.get(name) else default


def ints(value: str) -> tuple[int, ...]:
    return tuple(int(part) for part in value.split(",") if part.strip())


def schedule(value: str) -> str | None:
    """`none` (any case) turns the schedule off: runs are only triggered (UI, REST API, `make run`)."""
    return None if value.strip().lower() == "none" else value
