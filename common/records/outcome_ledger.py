"""Where loan-outcome files are kept: their folders and their ledger (kept like the batch ledger, by content hash).
outcomes/intake.py fills them; retention reads them."""

from __future__ import annotations

from pathlib import Path

from common.config import settings


def book() -> Path:
    """The ledger of outcome files, by content hash."""
    return settings().state_dir / "outcomes.json"


def folder(name: str) -> Path:
    return settings().outcomes_dir / name
