"""The live monitor's view of the prediction log: each run reads the lines logged since the run before, once.

A cursor (`live_state_dir/cursor.json`) keeps, per segment, the byte offset up to which lines were read. A run
claims its window (per segment: from the cursor to the end of the last complete line) and writes it to
`live_state_dir/runs/<run>.json` before it moves the cursor, so a rerun of the same run reads exactly the same lines
and nothing is counted twice. A torn last line (a gateway killed mid-write) is left out; a file in the folder that
is not a segment, or a segment with lines that are not prediction records, is skipped with a warning, never an
error. Reading needs pyarrow (the ML environment); claiming a window is standard library only.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from serving.prediction_log import SEGMENT, segments
from tfx_modules import features
from tfx_modules.batches import safe_name
from tfx_modules.config import settings

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
RECORD_FIELDS = ("time", "request_id", "application_id", "model", "version", "probability", "label", "latency_ms")

Window = dict[str, list[int]]  # segment name -> [start, end) byte offsets


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


def _complete_end(path: Path, start: int) -> int:
    """The offset just past the last newline at or after `start` (start itself when there is none)."""
    with path.open("rb") as handle:
        handle.seek(0, io.SEEK_END)
        end = handle.tell()
        while end > start:
            step = min(1 << 16, end - start)
            handle.seek(end - step)
            chunk = handle.read(step)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                return end - step + cut + 1
            end -= step
    return start


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
            end = _complete_end(path, start)
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


def whole_log() -> Window:
    """Every complete line of every segment on disk (the outcome join reads all predictions, not a run's window)."""
    window: Window = {}
    for path in segments(settings().predictions_dir):
        try:
            window[path.name] = [0, _complete_end(path, 0)]
        except FileNotFoundError:  # deleted by retention meanwhile
            continue
    return window


def foreign_files(folder: Path) -> list[str]:
    """Files in the log folder that are not segments (left alone, reported)."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if not SEGMENT.fullmatch(p.name) and not p.name.startswith("."))


def _schema():
    import pyarrow as pa

    feature_types = [pa.field(f.name, pa.string() if f.categorical else pa.float64()) for f in features.FEATURES]
    return pa.schema(
        [
            pa.field("time", pa.float64()),
            pa.field("request_id", pa.string()),
            pa.field("application_id", pa.string()),
            pa.field("model", pa.string()),
            pa.field("version", pa.int64()),
            pa.field("features", pa.struct(feature_types)),
            pa.field("probability", pa.float64()),
            pa.field("label", pa.int64()),
            pa.field("latency_ms", pa.float64()),
        ]
    )


def _parse(data: bytes, name: str, warnings: list[str]):
    """A pyarrow table of the chunk's prediction records. The fast reader takes the whole chunk; when it fails or
    returns another number of rows than there are lines, each line is read alone. Lines that are not prediction
    records (no request id or no features) are left out and counted in a warning."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyarrow import json as pa_json

    schema = _schema()
    options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")

    def table_of(chunk: bytes):
        try:
            return pa_json.read_json(io.BytesIO(chunk), parse_options=options)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return None

    lines = data.count(b"\n")
    table = table_of(data)
    if table is None or table.num_rows != lines:
        tables = [t for t in (table_of(line + b"\n") for line in data.splitlines()) if t is not None]
        table = pa.concat_tables(tables) if tables else schema.empty_table()
    table = table.filter(pc.and_(pc.is_valid(table["request_id"]), pc.is_valid(table["features"])))
    if table.num_rows < lines:
        warnings.append(f"{name}: {lines - table.num_rows} line(s) that are not prediction records skipped")
    return table


def read(window: Window) -> tuple[pd.DataFrame, list[str]]:
    """The window's predictions (one row per prediction: the record fields and one column per feature) and the
    warnings about what had to be skipped."""
    import pyarrow as pa

    folder = settings().predictions_dir
    warnings = [f"{name}: not a prediction log segment, skipped" for name in foreign_files(folder)]
    tables = []
    for name, (start, end) in sorted(window.items()):
        try:
            with (folder / name).open("rb") as handle:
                handle.seek(start)
                data = handle.read(end - start)
        except FileNotFoundError:
            warnings.append(f"{name}: deleted before it was read (retention), skipped")
            continue
        tables.append(_parse(data, name, warnings))
    for path in segments(folder):
        try:
            torn = path.stat().st_size - _complete_end(path, 0)
        except FileNotFoundError:
            continue
        if torn:
            warnings.append(f"{path.name}: an incomplete last line of {torn} bytes (torn, or being written) not read")
    for text in warnings:
        log.warning("prediction log: %s", text)
    table = pa.concat_tables(tables) if tables else _schema().empty_table()
    frame = table.flatten().to_pandas()
    frame.columns = [c.removeprefix("features.") for c in frame.columns]
    return frame, warnings
