"""The deploy record (`state_dir/serving.json`): which model version is live, which one a rollback returns to, and
the deploy history. serving/deploy.py writes it; retention and the model card read which versions are in use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.config import Settings

RECORD_NAME = "serving.json"


RECORD_NAME = "serving.json"


def record_path(s: Settings) -> Path:
    return s.state_dir / RECORD_NAME


def read_record(s: Settings) -> dict[str, Any]:
    path = record_path(s)
    return json.loads(path.read_text()) if path.exists() else {"live": None, "previous": None, "history": []}
