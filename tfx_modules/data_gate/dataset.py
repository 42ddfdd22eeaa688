"""The one place that reads and writes loan CSV batches, typed by the feature spec.

Everything downstream (the drift gate, TFX, tests) can then trust the dtypes: ints are int64, floats float64 (NaN
only in optional features), categories str, the label 0/1. A batch that cannot be typed raises `DataError` with a
reason a person can act on, so the DAG can quarantine it with that reason. Plausibility (unseen categories,
out-of-range numbers) is deliberately NOT checked here: TFDV validation reports those as anomalies.

Reading and writing run at C speed for millions of rows (Arrow tokenizes and writes; each column is typed or formatted
once per distinct value), and the exact reader, a Python CSV parse that knows every row's line number, judges any
file the fast path cannot vouch for, so errors name their lines and the result is the same either way.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv as arrow_csv

from common import features

# Spellings of "no value" accepted in any column; the Kaggle CSV uses the empty field.
MISSING_TOKENS = frozenset({"", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"})
_EXAMPLES = 3  # offending rows quoted in an error message


class DataError(ValueError):
    """A batch that cannot be read as loan data; `reason` says why in words fit for a quarantine report."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def read_batch(path: str | os.PathLike, *, require_label: bool = True) -> pd.DataFrame:
    """Read one CSV batch into a frame with the spec's columns (in `features.COLUMNS` order) and dtypes.

    Extra columns are dropped. With `require_label=False` (rows to score) the label may be absent.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror}") from err
    check_text(data)
    try:
        frame = _read_fast(data, require_label)
    except (ValueError, pa.ArrowException):  # a DataError, undecodable bytes, or Arrow's own parse error
        frame = None  # the exact reader says why, with line numbers
    return frame if frame is not None else _read_exact(decode(data), require_label)


def _wanted(header: list[str], require_label: bool) -> list[str]:
    """The spec's columns to take from a file with `header`; a DataError when the header cannot be used."""
    wanted = [c for c in features.COLUMNS if require_label or c != features.LABEL or c in header]
    missing = [c for c in wanted if c not in header]
    if len(missing) == len(wanted):
        raise DataError(f"no header row: the first line ({_clip(','.join(header))!r}) names none of the columns")
    if missing:
        raise DataError(f"missing columns: {', '.join(missing)}")
    duplicated = sorted({c for c in header if c in wanted and header.count(c) > 1})
    if duplicated:
        raise DataError(f"columns named more than once: {', '.join(duplicated)}")
    return wanted


def _read_fast(data: bytes, require_label: bool) -> pd.DataFrame | None:
    """Arrow's tokenizer, then `_column` on each column's distinct values only. None (or an error) for anything the
    exact reader must judge: quoted fields, a blank or padded header, no data rows, ragged or untypeable rows."""
    first = data.split(b"\n", 1)[0].removeprefix(b"\xef\xbb\xbf").rstrip(b"\r")
    if b'"' in data or not first.strip():
        return None
    names = first.decode().split(",")
    if any(name != name.strip() for name in names):
        return None
    wanted = _wanted(names, require_label)
    table = arrow_csv.read_csv(
        io.BytesIO(data),
        convert_options=arrow_csv.ConvertOptions(
            include_columns=wanted, column_types=dict.fromkeys(wanted, pa.string()), strings_can_be_null=False
        ),
    )
    if table.num_rows == 0:
        return None
    columns = {}
    for name in wanted:
        encoded = table[name].combine_chunks().dictionary_encode()
        distinct = pd.Series(encoded.dictionary.to_pylist(), dtype=object)
        columns[name] = _column(name, distinct.str.strip()).to_numpy()[encoded.indices.to_numpy()]
    return pd.DataFrame(columns)


def _read_exact(text: str, require_label: bool) -> pd.DataFrame:
    """The reference reader: every record with its line number, so each error can say where."""
    lines, records = csv_records(text)
    header = [name.strip() for name in records[0]]
    wanted = _wanted(header, require_label)
    if len(records) == 1:
        raise DataError("no data rows: the file has a header only")
    widths = pd.Series([len(r) for r in records[1:]], index=lines[1:])
    for wrong, what in ((widths < len(header), "fewer"), (widths > len(header), "more")):
        if wrong.any():
            raise DataError(f"rows with {what} fields than the header ({len(header)}) at {where(wrong)}")
    raw = pd.DataFrame(records[1:], columns=header, index=lines[1:])
    return pd.DataFrame({name: _column(name, raw[name].str.strip()) for name in wanted}).reset_index(drop=True)


def read_many(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Concatenate batches; a directory stands for the `*.csv` files in it. The error names the bad file."""
    given = [Path(p) for p in paths]
    files = [f for p in given for f in (sorted(p.glob("*.csv")) if p.is_dir() else [p])]
    if not files:
        raise DataError(f"no CSV files in {', '.join(map(str, given))}" if given else "no CSV files given")
    frames = []
    for file in files:
        try:
            frames.append(read_batch(file))
        except DataError as err:
            raise DataError(f"{file}: {err.reason}") from err
    return pd.concat(frames, ignore_index=True)


def write_canonical(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write `df` in `features.COLUMNS` order, floats always with a decimal point ("5.0") and ints as ints.

    CsvExampleGen infers a column's type from how it is written, so a float column that happens to hold whole
    numbers must still be written as floats. The file appears atomically: a reader never sees half of it.
    """
    columns = [c for c in features.COLUMNS if c != features.LABEL or c in df.columns]
    fields = [_formatted(df[c].astype(column_dtype(c))) for c in columns]
    rows = pc.binary_join_element_wise(pc.binary_join_element_wise(*fields, ","), "", "\n")
    _, offsets, body = rows.buffers()
    start, end = np.frombuffer(offsets, np.int32)[[rows.offset, rows.offset + len(rows)]]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with partial.open("wb") as out:
        out.write((",".join(columns) + "\n").encode())
        out.write(memoryview(body)[start:end])
    partial.replace(path)
    return path


def _formatted(values: pd.Series) -> pa.StringArray:
    """A column as CSV fields, each distinct value formatted once: floats as Python writes them (always with a
    point or exponent), missing as the empty field, text quoted only when it must be."""
    codes, distinct = pd.factorize(values)
    text = [_field(value) for value in distinct] + [""]  # code -1 (missing) takes the last one
    return pa.array(np.array(text, dtype=object)[codes], type=pa.string())


def _field(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\r\n') else value
    return repr(float(value)) if isinstance(value, float) else str(int(value))


def column_dtype(name: str) -> str:
    """The pandas dtype of a column of `features.COLUMNS` (label included)."""
    if name == features.LABEL:
        return "int64"
    return {int: "int64", float: "float64", str: "object"}[features.BY_NAME[name].dtype]


def check_text(data: bytes) -> None:
    """What makes a file no CSV text at all, checked on the bytes before either reader (without copying them)."""
    if not data or data.isspace():
        raise DataError("empty file")
    if b"\0" in data[:65536]:
        raise DataError("binary content, not a CSV text file")


def decode(data: bytes) -> str:
    """The text for the exact reader (the fast one reads the bytes)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8 text (undecodable byte at offset {err.start})") from err


def csv_records(text: str) -> tuple[list[int], list[list[str]]]:
    """The non-blank CSV records and the line number each ends on (for messages)."""
    reader = csv.reader(io.StringIO(text), strict=True)
    lines, records = [], []
    try:
        for record in reader:
            if any(field.strip() for field in record):
                lines.append(reader.line_num)
                records.append(record)
    except csv.Error as err:
        raise DataError(f"not a well-formed CSV: {err} at line {reader.line_num}") from err
    if not records:
        raise DataError("empty file")
    return lines, records


def _column(name: str, values: pd.Series) -> pd.Series:
    """Type one column of raw strings (indexed by CSV line number) or raise a DataError naming the bad rows."""
    is_missing = values.isin(MISSING_TOKENS)
    optional = name in features.OPTIONAL
    if is_missing.any() and not optional:
        raise DataError(
            f"column {name!r}: missing value in a required column at {where(is_missing)}"
            f" (only {', '.join(features.OPTIONAL)} may be missing)"
        )
    if column_dtype(name) == "object":
        return values
    text = pd.to_numeric(values.mask(is_missing), errors="coerce").isna() & ~is_missing
    if text.any():
        raise DataError(f"column {name!r}: text in a numeric column at {where(text, values)}")
    numbers = values.mask(is_missing).astype("float64")  # exact, unlike to_numeric: "0.1" gives float("0.1")
    if name == features.LABEL:
        bad = ~numbers.isin((0, 1))
        if bad.any():
            raise DataError(f"column {name!r}: the label must be 0 or 1, found other values at {where(bad, values)}")
    if column_dtype(name) == "int64":
        fractional = numbers % 1 != 0  # also true for +-inf, whose remainder is NaN
        if fractional.any():
            raise DataError(f"column {name!r}: expected whole numbers, found fractions at {where(fractional, values)}")
        return numbers.astype("int64")
    return numbers.astype("float64")


def where(bad: pd.Series, values: pd.Series | None = None) -> str:
    """'line 7 ('abc'), line 9 ('x') and 4 more rows' for the flagged rows."""
    lines = bad[bad].index
    shown = ", ".join(
        f"line {i}" + (f" ({_clip(values[i])!r})" if values is not None else "") for i in lines[:_EXAMPLES]
    )
    more = len(lines) - _EXAMPLES
    return shown + (f" and {more} more rows" if more > 0 else "")


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
