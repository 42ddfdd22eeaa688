"""The live monitor's view of the prediction log: each run reads the lines logged since the run before, once.

A cursor (`live_state_dir/cursor.json`) keeps, per segment, the byte offset up to which lines were read. A run
claims its window (per segment: from the cursor to the end of the last complete line) and writes it to
`live_state_dir/runs/<run>.json` before it moves the cursor, so a rerun of the same run reads exactly the same lines
and nothing is counted twice. A torn last line (a gateway killed mid-write) is left out; a file in the folder that
is not a segment, or a segment with lines that are not prediction records, is skipped with a warning, never an
error. Reading a window is serving/logged_predictions.py's; claiming one is standard library only.
"""

from __future__ import annotations

import json
from pathlib import Path

from common.config import settings
from common.records.batch_ledger import safe_name
from serving.logged_predictions import Window, complete_end
from serving.prediction_log import segments

RECORD_FIELDS = ("time", "request_id", "application_id", "model", "version", "probability", "label", "latency_ms")


def _state() -> Path:
    return settings().live_state_dir


def _load(path: Path, empty: dict) -> dict:
    return json.loads(path.read_text()) if path.exists() else empty


def _save(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(doc, indent=2, sort_keys=True))
    partial.replace(path)


def run_path(run_id: str) -> Path:
    return _state() / "runs" / f"{safe_name(run_id)}.json"


def save_run(record: dict) -> Path:
    """Keep a run's record (its window included) and point `last_run.json` at it."""
    _save(run_path(record["run_id"]), record)
    _save(_state() / "last_run.json", record)
    return _state() / "last_run.json"


def claim(run_id: str) -> Window:
    """The run's window: the one it claimed before (a rerun), else everything after the cursor, which then moves."""
    recorded = _load(run_path(run_id), {})
    if "window" in recorded:
        return recorded["window"]
    folder = settings().predictions_dir
    offsets = _load(_state() / "cursor.json", {"offsets": {}})["offsets"]
    window: Window = {}
    for path in segments(folder):
        start = offsets.get(path.name, 0)
        try:
            end = complete_end(path, start)
        except FileNotFoundError:  # deleted by retention meanwhile
            continue
        if end > start:
            window[path.name] = [start, end]
    _save(run_path(run_id), {"run_id": run_id, "window": window})
    on_disk = {p.name for p in segments(folder)}
    moved = {name: offset for name, offset in offsets.items() if name in on_disk}
    moved.update({name: end for name, (_, end) in window.items()})
    _save(_state() / "cursor.json", {"offsets": moved})
    return window
