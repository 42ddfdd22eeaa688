"""Reading the gateway's prediction log back: complete lines only, typed, whatever was torn or foreign skipped with a
warning. The live monitor reads a run's window of it, the outcome join the whole log. Needs pyarrow when reading
(the ML environment); finding a window's offsets is standard library only."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from common import features
from common.config import settings
from serving.prediction_log import SEGMENT, segments

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
Window = dict[str, list[int]]  # segment name -> [start, end) byte offsets


log = logging.getLogger(__name__)


Window = dict[str, list[int]]  # segment name -> [start, end) byte offsets


def complete_end(path: Path, start: int) -> int:
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


def whole_log() -> Window:
    """Every complete line of every segment on disk (the outcome join reads all predictions, not a run's window)."""
    window: Window = {}
    for path in segments(settings().predictions_dir):
        try:
            window[path.name] = [0, complete_end(path, 0)]
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
            torn = path.stat().st_size - complete_end(path, 0)
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
