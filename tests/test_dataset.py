"""The typed loader: generated and real data read back exactly; every kind of bad file gets a clear DataError."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import features
from data.generate import generate
from tfx_modules.data_gate import dataset


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return generate(300, seed=7)


@pytest.fixture
def good_lines(rows: pd.DataFrame, tmp_path: Path) -> list[str]:
    """A valid canonical batch as text lines, header first, for the bad-file cases to break one thing in."""
    return dataset.write_canonical(rows.head(5), tmp_path / "good.csv").read_text().splitlines()


def _write(tmp_path: Path, content: str | bytes, name: str = "batch.csv") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def _set(lines: list[str], line_no: int, column: str, value: str) -> str:
    """The CSV text with `column` of 1-based `line_no` replaced by `value`."""
    out = [line.split(",") for line in lines]
    out[line_no - 1][features.COLUMNS.index(column)] = value
    return "\n".join(",".join(fields) for fields in out) + "\n"


def test_round_trip_keeps_values_and_dtypes(rows: pd.DataFrame, tmp_path: Path) -> None:
    path = dataset.write_canonical(rows, tmp_path / "sub" / "batch.csv")
    back = dataset.read_batch(path)
    pd.testing.assert_frame_equal(back, rows, check_exact=True)
    assert list(back.dtypes) == [dataset.column_dtype(c) for c in features.COLUMNS]
    assert back["person_emp_length"].isna().any() or back["loan_int_rate"].isna().any()
    assert [p.name for p in path.parent.iterdir()] == ["batch.csv"]  # no partial file left behind


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 1e9, allow_nan=False) | st.floats(0, 1e-3), min_size=1, max_size=20))
def test_floats_survive_a_round_trip_exactly(values: list[float]) -> None:
    df = generate(len(values), seed=0).assign(loan_int_rate=values)
    with tempfile.TemporaryDirectory() as tmp:
        back = dataset.read_batch(dataset.write_canonical(df, Path(tmp) / "f.csv"))
    assert back["loan_int_rate"].tolist() == values


def test_canonical_writes_floats_as_floats_and_ints_as_ints(tmp_path: Path) -> None:
    df = generate(50, seed=1)
    df["person_emp_length"] = df["person_emp_length"].fillna(3.0)  # all whole numbers, no NaN
    df["person_age"] = df["person_age"].astype("float64")  # an int column held as floats
    text = pd.read_csv(dataset.write_canonical(df, tmp_path / "c.csv"), dtype=str, keep_default_na=False)
    assert list(text.columns) == list(features.COLUMNS)
    assert text["person_emp_length"].str.fullmatch(r"\d+\.\d+").all()
    for name in (*[f.name for f in features.FEATURES if f.dtype is int], features.LABEL):
        assert text[name].str.fullmatch(r"-?\d+").all(), name


def test_reads_columns_in_any_order_and_drops_extras(rows: pd.DataFrame, tmp_path: Path) -> None:
    shuffled = rows[list(reversed(features.COLUMNS))].assign(id=range(len(rows)), note="x")
    shuffled.to_csv(tmp_path / "s.csv", index=False)
    pd.testing.assert_frame_equal(dataset.read_batch(tmp_path / "s.csv"), rows)


def test_accepts_unseen_categories_out_of_range_numbers_and_missing_optionals(
    good_lines: list[str], tmp_path: Path
) -> None:
    text = _set(good_lines, 2, "loan_intent", "CRYPTO")
    text = _set(text.splitlines(), 3, "person_age", "200")
    text = _set(text.splitlines(), 4, "loan_int_rate", "NA")
    text = _set(text.splitlines(), 5, "person_emp_length", "")
    df = dataset.read_batch(_write(tmp_path, text))
    assert df.loc[0, "loan_intent"] == "CRYPTO"
    assert df.loc[1, "person_age"] == 200
    assert np.isnan(df.loc[2, "loan_int_rate"]) and np.isnan(df.loc[3, "person_emp_length"])


def test_label_optional_when_not_required(rows: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "unlabelled.csv"
    rows.drop(columns=features.LABEL).to_csv(path, index=False)
    assert list(dataset.read_batch(path, require_label=False).columns) == list(features.FEATURE_NAMES)
    with pytest.raises(dataset.DataError, match=f"missing columns: {features.LABEL}$"):
        dataset.read_batch(path)


def test_reads_the_real_dataset(real_csv: Path) -> None:
    df = dataset.read_batch(real_csv)
    assert df.shape == (32_581, 12)
    assert df[features.LABEL].sum() == 7_108
    assert df.isna().sum().to_dict() == {c: {"person_emp_length": 895, "loan_int_rate": 3_116}.get(c, 0) for c in df}


def _frame(lines: list[str]) -> pd.DataFrame:
    return pd.DataFrame([line.split(",") for line in lines[1:]], columns=features.COLUMNS)


def _body(lines: list[str]) -> str:
    return "\n".join(lines[1:]) + "\n"


# name -> (variant of a valid batch's text, whether the fast reader takes it itself)
VARIANTS = {
    "canonical": (lambda text: text, True),
    "CRLF and BOM": (lambda text: "\ufeff" + text.replace("\n", "\r\n"), True),
    "spaces around values": (lambda text: text.replace(",", " , "), False),
    "padded values, clean header": (
        lambda text: text.split("\n", 1)[0] + "\n" + text.split("\n", 1)[1].replace(",", " ,"),
        True,
    ),
    "missing tokens": (lambda text: text.replace(",,", ",NA,").replace(",NA,", ", null ,", 1), True),
    "blank lines between rows": (lambda text: text.replace("\n", "\n\n", 3), True),
    "quoted fields": (lambda text: text.replace("RENT", '"RENT"'), False),
}


@pytest.mark.parametrize("case", list(VARIANTS))
def test_fast_reader_agrees_with_the_exact_reader(case: str, rows: pd.DataFrame, tmp_path: Path) -> None:
    """The Arrow path must give the exact reader's frame, and take the common files itself (or it is never tested)."""
    make, fast = VARIANTS[case]
    canonical = dataset.write_canonical(rows.head(60), tmp_path / "c.csv").read_text()
    path = _write(tmp_path, make(canonical), "variant.csv")
    exact = dataset._read_exact(dataset.decode(path.read_bytes()), True)
    pd.testing.assert_frame_equal(dataset.read_batch(path), exact, check_exact=True)
    assert (dataset._read_fast(path.read_bytes(), True) is not None) == fast
    assert len(exact) == 60


def test_canonical_bytes_are_pandas_csv_bytes(rows: pd.DataFrame, tmp_path: Path) -> None:
    """The Arrow writer writes what pandas' CSV writer wrote before it, quoting included."""
    df = rows.assign(loan_intent=["A,B", 'say "hi"', *rows["loan_intent"][2:]])
    expected = pd.DataFrame({c: df[c].astype(dataset.column_dtype(c)) for c in features.COLUMNS})
    text = expected.to_csv(index=False, lineterminator="\n")
    assert dataset.write_canonical(df, tmp_path / "w.csv").read_text() == text
    pd.testing.assert_frame_equal(dataset.read_batch(tmp_path / "w.csv"), expected)


# name -> (make the file content from valid lines, pattern the DataError reason must match)
BAD_FILES = {
    "empty": (lambda lines: "", "^empty file$"),
    "blank lines only": (lambda lines: "\n \n", "^empty file$"),
    "empty fields only": (lambda lines: ",,\n , \n", "^empty file$"),
    "binary": (lambda lines: b"PK\x03\x04\x00\x00\x08\x00" + bytes(range(256)), "binary content"),
    "not utf-8": (lambda lines: "caf\xe9,".encode("latin-1") + lines[0].encode(), "not UTF-8 text .*offset 3"),
    "header only": (lambda lines: lines[0] + "\n", "^no data rows"),
    "no header": (_body, "^no header row"),
    "missing columns": (
        lambda lines: _frame(lines).drop(columns=["loan_grade", "loan_amnt"]).to_csv(index=False),
        "^missing columns: loan_grade, loan_amnt$",
    ),
    "duplicate column": (
        lambda lines: lines[0] + ",loan_grade\n" + _body(lines).replace("\n", ",A\n"),
        "more than once: loan_grade$",
    ),
    "text in numeric": (
        lambda lines: _set(lines, 3, "person_income", "abc"),
        r"'person_income': text .* at line 3 \('abc'\)$",
    ),
    "missing required": (lambda lines: _set(lines, 4, "person_age", ""), "'person_age': missing value .* at line 4"),
    "missing category": (lambda lines: _set(lines, 2, "loan_grade", "NA"), "'loan_grade': missing value .* line 2"),
    "label not 0/1": (lambda lines: _set(lines, 5, features.LABEL, "2"), r"label must be 0 or 1.* line 5 \('2'\)$"),
    "fractional int": (lambda lines: _set(lines, 2, "loan_amnt", "1000.5"), "'loan_amnt': expected whole numbers"),
    "short row": (lambda lines: "\n".join(lines) + "\n1,2,3\n", r"fewer fields than the header \(12\) at line 7$"),
    "long row": (lambda lines: "\n".join(lines[:3]) + ",9\n", r"more fields than the header \(12\) at line 3$"),
    "bad quoting": (lambda lines: lines[0] + '\n"abc"def,\n', "^not a well-formed CSV: .* at line 2"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_raises_a_clear_data_error(case: str, good_lines: list[str], tmp_path: Path) -> None:
    make, pattern = BAD_FILES[case]
    path = _write(tmp_path, make(good_lines))
    before = path.read_bytes()
    with pytest.raises(dataset.DataError, match=pattern) as err:
        dataset.read_batch(path)
    assert err.value.reason == str(err.value)
    assert path.read_bytes() == before  # the bad batch is left as it was, for quarantine


def test_error_lists_a_few_rows_and_counts_the_rest(good_lines: list[str], tmp_path: Path) -> None:
    lines = [good_lines[0], *[good_lines[1]] * 8]
    text = "\n".join([lines[0], *[line.replace(line.split(",")[0], "old", 1) for line in lines[1:]]])
    with pytest.raises(
        dataset.DataError, match=r"line 2 \('old'\), line 3 \('old'\), line 4 \('old'\) and 5 more rows"
    ):
        dataset.read_batch(_write(tmp_path, text))


def test_read_many_concatenates_files_and_folders(tmp_path: Path) -> None:
    a, b, c = generate(10, seed=1), generate(20, seed=2), generate(30, seed=3)
    dataset.write_canonical(a, tmp_path / "a.csv")
    dataset.write_canonical(b, tmp_path / "folder" / "b.csv")
    dataset.write_canonical(c, tmp_path / "folder" / "c.csv")
    (tmp_path / "folder" / "notes.txt").write_text("not a batch")
    df = dataset.read_many([tmp_path / "a.csv", tmp_path / "folder"])
    pd.testing.assert_frame_equal(df, pd.concat([a, b, c], ignore_index=True))


def test_read_many_names_the_bad_file(tmp_path: Path) -> None:
    dataset.write_canonical(generate(10), tmp_path / "good.csv")
    bad = _write(tmp_path, "", "bad.csv")
    with pytest.raises(dataset.DataError, match=f"^{re.escape(str(bad))}: empty file$"):
        dataset.read_many([tmp_path / "good.csv", bad])
    with pytest.raises(dataset.DataError, match=r"^no CSV files given$"):
        dataset.read_many([])
    (tmp_path / "empty").mkdir()
    with pytest.raises(dataset.DataError, match=r"^no CSV files in .*empty$"):
        dataset.read_many(iter([tmp_path / "empty"]))
