"""The generator: shaped like the real CSV, deterministic by seed, and its drift options do what they say."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from common import config, features
from data import generate as gen
from tfx_modules.data_gate import dataset

N = 20_000


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return gen.generate(N, seed=3)


def test_columns_and_dtypes_match_the_spec(df: pd.DataFrame) -> None:
    assert list(df.columns) == list(features.COLUMNS)
    assert [str(t) for t in df.dtypes] == [dataset.column_dtype(c) for c in features.COLUMNS]
    assert len(df) == N


def test_missing_values_only_where_the_real_data_has_them(df: pd.DataFrame) -> None:
    rates = df.isna().mean()
    assert rates["person_emp_length"] == pytest.approx(0.0275, abs=0.005)
    assert rates["loan_int_rate"] == pytest.approx(0.0956, abs=0.01)
    assert rates.drop(list(features.OPTIONAL)).eq(0).all()


@pytest.mark.parametrize("name", features.CATEGORICAL)
def test_every_category_of_the_vocabulary_and_nothing_else(df: pd.DataFrame, name: str) -> None:
    assert set(df[name]) == set(features.BY_NAME[name].vocabulary)


def test_category_frequencies_are_the_real_ones(df: pd.DataFrame) -> None:
    assert df["person_home_ownership"].value_counts(normalize=True)["RENT"] == pytest.approx(0.505, abs=0.015)
    assert df["loan_grade"].value_counts(normalize=True)["A"] == pytest.approx(0.331, abs=0.015)
    assert df["cb_person_default_on_file"].eq("Y").mean() == pytest.approx(0.176, abs=0.015)
    assert not df.loc[df["loan_grade"].isin(["A", "B"]), "cb_person_default_on_file"].eq("Y").any()


def test_numeric_marginals_are_realistic(df: pd.DataFrame) -> None:
    assert df["person_age"].min() >= 20 and df["person_age"].median() == pytest.approx(26, abs=1.5)
    assert df["person_income"].min() >= 4_000 and df["person_income"].median() == pytest.approx(55_000, rel=0.1)
    assert df["person_income"].quantile(0.99) > 3 * df["person_income"].median()  # a long tail
    assert df["loan_amnt"].between(500, 35_000).all()
    ratio = df["loan_amnt"] / df["person_income"]
    assert (df["loan_percent_income"] - ratio).abs().max() <= 0.005 + 1e-9
    by_grade = df.groupby("loan_grade")["loan_int_rate"].mean()
    assert by_grade.is_monotonic_increasing and by_grade["A"] < 8 < 19 < by_grade["G"]


def test_label_rate_and_drivers_are_those_of_real_defaults(df: pd.DataFrame) -> None:
    y = df[features.LABEL]
    assert y.mean() == pytest.approx(0.22, abs=0.02)
    rate = y.groupby(df["loan_grade"]).mean()
    assert rate["A"] < 0.15 and rate["D"] > 0.5
    by_home = y.groupby(df["person_home_ownership"]).mean()
    assert by_home["RENT"] > 2 * by_home["MORTGAGE"]
    assert y[df["loan_percent_income"] > 0.3].mean() > 3 * y[df["loan_percent_income"] < 0.2].mean()
    assert y[df["person_income"] < 30_000].mean() > 2 * y[df["person_income"] > 80_000].mean()


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    pd.testing.assert_frame_equal(gen.generate(500, seed=11), gen.generate(500, seed=11))
    assert not gen.generate(500, seed=11).equals(gen.generate(500, seed=12))


def test_shift_multiplies_a_column_and_keeps_integers_integer(df: pd.DataFrame) -> None:
    shifted = gen.generate(N, seed=3, shift={"person_income": 1.5})
    assert shifted["person_income"].dtype == "int64"
    assert (shifted["person_income"] - 1.5 * df["person_income"]).abs().max() <= 0.5
    assert shifted["loan_percent_income"].mean() < 0.75 * df["loan_percent_income"].mean()  # follows income
    untouched = [c for c in features.FEATURE_NAMES if c not in ("person_income", "loan_percent_income")]
    pd.testing.assert_frame_equal(shifted[untouched], df[untouched])
    assert shifted[features.LABEL].mean() < df[features.LABEL].mean()  # richer borrowers default less


def test_category_mix_pins_a_share_and_rescales_the_rest(df: pd.DataFrame) -> None:
    mixed = gen.generate(N, seed=3, category_mix={"loan_intent": {"VENTURE": 0.6}})
    share = mixed["loan_intent"].value_counts(normalize=True)
    assert share["VENTURE"] == pytest.approx(0.6, abs=0.015)
    expected = gen.INTENT["EDUCATION"] * 0.4 / (1 - gen.INTENT["VENTURE"])
    assert share["EDUCATION"] == pytest.approx(expected, abs=0.015)


def test_category_mix_can_inject_an_unseen_category() -> None:
    mixed = gen.generate(2_000, seed=1, category_mix={"loan_grade": {"Z": 0.1}})
    assert mixed["loan_grade"].eq("Z").mean() == pytest.approx(0.1, abs=0.02)
    assert mixed.loc[mixed["loan_grade"] == "Z", "loan_int_rate"].notna().any()


def test_missing_option_sets_the_missing_rate() -> None:
    df = gen.generate(5_000, seed=2, missing={"loan_int_rate": 0.5})
    assert df["loan_int_rate"].isna().mean() == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"shift": {"loan_intent": 2.0}}, "shift names"),
        ({"shift": {"person_income": 0}}, "must be > 0"),
        ({"category_mix": {"person_age": {"X": 0.5}}}, "category_mix names"),
        ({"category_mix": {"loan_intent": {"VENTURE": 0.7, "MEDICAL": 0.5}}}, "sums to 1.200 > 1"),
        ({"category_mix": {"loan_intent": {"VENTURE": -0.1}}}, r"must be in \[0, 1\]"),
        ({"missing": {"person_age": 0.1}}, "missing names"),
    ],
)
def test_bad_options_are_rejected(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gen.generate(10, **options)


def test_real_sized_batch_is_vectorized() -> None:
    """~0.1 s on a quiet machine; 5 s absorbs a loaded one, while a per-row Python loop would take minutes."""
    start = time.perf_counter()
    gen.generate(gen.REAL_ROWS, seed=0)
    assert time.perf_counter() - start < 5.0


def test_cli_writes_a_canonical_csv(tmp_path: Path) -> None:
    out = tmp_path / "batch.csv"
    command = [sys.executable, "-m", "data.generate", "--rows", "300", "--seed", "4", "--out", str(out)]
    drift = ["--shift", "person_income=2", "--mix", "loan_intent=VENTURE:0.5", "--missing", "loan_int_rate=0.3"]
    done = subprocess.run(
        [*command, *drift], capture_output=True, text=True, cwd=config.PROJECT_ROOT, timeout=60, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == str(out)
    expected = gen.generate(
        300,
        seed=4,
        shift={"person_income": 2},
        category_mix={"loan_intent": {"VENTURE": 0.5}},
        missing={"loan_int_rate": 0.3},
    )
    pd.testing.assert_frame_equal(dataset.read_batch(out), expected)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--shift", "person_income"], "--shift expects NAME=VALUE"),
        (["--mix", "loan_intent=0.5"], "--mix expects COLUMN=CATEGORY:P"),
        (["--mix", "loan_intent=VENTURE:lots"], "could not convert string to float"),
        (["--missing", "person_age=0.1"], "missing names"),
    ],
)
def test_cli_rejects_malformed_options(
    option: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        gen.main(["--rows", "10", "--out", str(tmp_path / "x.csv"), *option])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
