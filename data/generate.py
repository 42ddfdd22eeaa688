"""Seeded generator of realistic loan rows, shaped like the Kaggle credit-risk CSV.

Tests, demos and CI need data that behaves like the real set (same columns, types, missing rates, category mix,
long tails, outliers, a learnable label) without shipping it, and drift tests need controlled changes of it.
The marginals and conditional structure were fitted by hand to the real CSV (see data/README.md):
grade depends on home ownership, prior default and interest rate on grade, the loan on income, and the label on
grade, loan-to-income, home ownership, income, intent and prior default through a logistic model.

Drift options keep the label model fixed (covariate shift): `shift` multiplies numeric columns before the label
is drawn, `category_mix` pins category probabilities, `missing` sets missing rates of the optional features.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping

import numpy as np
import pandas as pd

from common import config, features
from tfx_modules.data_gate import dataset

Probs = Mapping[str, float]

HOME: Probs = {"RENT": 0.5048, "MORTGAGE": 0.4126, "OWN": 0.0793, "OTHER": 0.0033}
INTENT: Probs = {
    "EDUCATION": 0.1981,
    "MEDICAL": 0.1863,
    "VENTURE": 0.1755,
    "PERSONAL": 0.1695,
    "DEBTCONSOLIDATION": 0.1600,
    "HOMEIMPROVEMENT": 0.1106,
}
GRADES = ("A", "B", "C", "D", "E", "F", "G")
GRADE_BY_HOME: Mapping[str, Probs] = {
    home: dict(zip(GRADES, row, strict=True))
    for home, row in {
        "RENT": (0.266, 0.338, 0.224, 0.128, 0.034, 0.008, 0.002),
        "MORTGAGE": (0.406, 0.301, 0.168, 0.090, 0.025, 0.007, 0.002),
        "OWN": (0.358, 0.311, 0.192, 0.109, 0.022, 0.006, 0.002),
        "OTHER": (0.243, 0.318, 0.159, 0.187, 0.075, 0.018, 0.000),
    }.items()
}
# Lenders record a prior default only for grades C and worse, about half of them.
DEFAULT_BY_GRADE: Mapping[str, Probs] = {g: {"N": 1.0, "Y": 0.0} if g in "AB" else {"N": 0.5, "Y": 0.5} for g in GRADES}
RATE_BY_GRADE = {"A": (7.33, 1.04), "B": (11.0, 0.91), "C": (13.46, 0.96), "D": (15.36, 1.11), "E": (17.0, 1.32)}
RATE_BY_GRADE |= {"F": (18.6, 1.38), "G": (20.25, 1.07)}
RATE_UNSEEN_GRADE = (11.0, 3.24)
MISSING_RATE = {"person_emp_length": 0.0275, "loan_int_rate": 0.0956}
INCOME_LOG_MEAN = {"RENT": 10.78, "MORTGAGE": 11.14, "OWN": 10.76, "OTHER": 10.99}

# Logistic label model: log-odds of default. The intercept gives ~22 % positives on unshifted data.
INTERCEPT = -4.9
GRADE_EFFECT = {"A": 0.0, "B": 0.7, "C": 1.05, "D": 3.75, "E": 4.1, "F": 4.5, "G": 6.9}
HOME_EFFECT = {"RENT": 1.6, "MORTGAGE": 0.0, "OWN": -1.1, "OTHER": 1.5}
INTENT_EFFECT = {
    "DEBTCONSOLIDATION": 0.55,
    "MEDICAL": 0.45,
    "HOMEIMPROVEMENT": 0.55,
    "PERSONAL": 0.0,
    "EDUCATION": -0.25,
    "VENTURE": -0.7,
}
PRIOR_DEFAULT_EFFECT = 0.4
PERCENT_INCOME_EFFECT = 3.75
PERCENT_INCOME_KNEE, PERCENT_INCOME_JUMP = 0.3, 2.75  # affordability collapses beyond ~30 % of income
LOG_INCOME_EFFECT = -0.9
# `age_bias`: a deliberately unfair label, log-odds added per age band (config.DEFAULT_AGE_BANDS), times the bias.
# The real data shows no such dependence (default rates 21-25 % in every band).
AGE_BAND_EFFECT = (1.0, 0.0, -0.5, -1.0)

REAL_ROWS = 32_581  # rows in the Kaggle CSV


def generate(
    n: int,
    seed: int = 0,
    *,
    shift: Mapping[str, float] | None = None,
    category_mix: Mapping[str, Probs] | None = None,
    missing: Mapping[str, float] | None = None,
    age_bias: float = 0.0,
) -> pd.DataFrame:
    """`n` rows in `features.COLUMNS` order, typed like `dataset.read_batch` returns them.

    `shift={"person_income": 1.5}` multiplies a numeric column (integer columns stay integer; the loan-to-income
    ratio follows income and amount). `category_mix={"loan_intent": {"VENTURE": 0.6}}` pins the probability of
    a category and rescales the others; a category outside the vocabulary may be named to inject it.
    `missing={"loan_int_rate": 0.5}` sets the missing rate of an optional feature. `age_bias=3` makes default
    depend on age band (AGE_BAND_EFFECT times 3 in log-odds): a batch a fair model must not learn from.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    shift, mix, missing = _checked(shift, category_mix, missing)
    rng = np.random.default_rng(seed)

    home = _draw(rng, HOME, mix.get("person_home_ownership"), n)
    intent = _draw(rng, INTENT, mix.get("loan_intent"), n)
    grade = _draw_given(rng, home, GRADE_BY_HOME, mix.get("loan_grade"))
    prior_default = _draw_given(rng, grade, DEFAULT_BY_GRADE, mix.get("cb_person_default_on_file"))

    # Ages 20.. with a right tail (median 26, 95 % at 40) and, like the real data, a few typos of 100-144.
    age = 20 + np.floor(np.exp(rng.normal(np.log(6.5), 0.7, n)))
    age = np.where(rng.random(n) < 1.5e-4, rng.integers(100, 145, n), np.minimum(age, 94))
    # Credit history grows with age (correlation ~0.86 in the real data).
    cred_hist = np.clip(np.round(1 + (age - 20) * 0.6 + rng.normal(0, 1.5, n)), 2, 30)
    # Log-normal income by home ownership, rising with age; Student-t noise gives the millionaires' tail.
    log_income = (
        pd.Series(home).map(INCOME_LOG_MEAN).fillna(10.92).to_numpy()
        + 0.015 * (np.minimum(age, 70) - 27)
        + 0.46 * rng.standard_t(8, n)
    )
    income = np.clip(np.round(np.exp(log_income), -2), 4_000, 6_000_000)
    # Whole years of employment, bounded by age, plus the real data's rare impossible values (up to 123).
    emp_length = np.minimum(np.floor(rng.gamma(1.5, 3.5, n)), np.maximum(age - 16, 0))
    emp_length = np.where(rng.random(n) < 1e-4, rng.integers(60, 124, n), emp_length)
    # Loans grow with income, are mostly round sums, and never exceed 83 % of income (the real maximum).
    amount = np.exp(8.95 + 0.45 * (np.log(income) - 10.9) + rng.normal(0, 0.52, n))
    amount = np.where(rng.random(n) < 0.7, np.round(amount / 500) * 500, np.round(amount / 25) * 25)
    amount = np.clip(np.minimum(amount, np.floor(0.83 * income / 25) * 25), 500, 35_000)
    rate_mean, rate_sd = np.array([RATE_BY_GRADE.get(g, RATE_UNSEEN_GRADE) for g in grade]).reshape(-1, 2).T
    int_rate = np.clip(rng.normal(rate_mean, rate_sd), 5.42, 23.22)

    df = pd.DataFrame(
        {
            "person_age": age,
            "person_income": income,
            "person_home_ownership": home,
            "person_emp_length": emp_length,
            "loan_intent": intent,
            "loan_grade": grade,
            "loan_amnt": amount,
            "loan_int_rate": int_rate,
            "cb_person_default_on_file": prior_default,
            "cb_person_cred_hist_length": cred_hist,
        }
    )
    for name, factor in shift.items():
        if name != "loan_percent_income":
            df[name] = df[name] * factor
    df["loan_percent_income"] = df["loan_amnt"] / df["person_income"] * shift.get("loan_percent_income", 1.0)
    for name in features.NUMERIC:
        df[name] = df[name].round(0 if features.BY_NAME[name].dtype is int else 2).astype(dataset.column_dtype(name))
    df[features.LABEL] = (rng.random(n) < _default_probability(df, age_bias)).astype("int64")
    for name, rate in (MISSING_RATE | missing).items():
        df.loc[rng.random(n) < rate, name] = np.nan
    return df[list(features.COLUMNS)]


def _default_probability(df: pd.DataFrame, age_bias: float = 0.0) -> np.ndarray:
    """The label model: the drivers real defaults have (grade, loan-to-income, renting, income, intent, history),
    plus `age_bias` times the age band's effect."""
    pct = df["loan_percent_income"].to_numpy()
    band = np.searchsorted(np.array(config.DEFAULT_AGE_BANDS), df["person_age"].to_numpy(), side="right")
    logit = (
        INTERCEPT
        + df["loan_grade"].map(GRADE_EFFECT).fillna(0.0).to_numpy()
        + df["person_home_ownership"].map(HOME_EFFECT).fillna(0.0).to_numpy()
        + df["loan_intent"].map(INTENT_EFFECT).fillna(0.0).to_numpy()
        + PRIOR_DEFAULT_EFFECT * (df["cb_person_default_on_file"] == "Y").to_numpy()
        + PERCENT_INCOME_EFFECT * pct
        + PERCENT_INCOME_JUMP * (pct > PERCENT_INCOME_KNEE)
        + LOG_INCOME_EFFECT * (np.log(df["person_income"].to_numpy()) - 10.9)
        + age_bias * np.array(AGE_BAND_EFFECT)[band]
    )
    return 1 / (1 + np.exp(-logit))


def _checked(
    shift: Mapping[str, float] | None, mix: Mapping[str, Probs] | None, missing: Mapping[str, float] | None
) -> tuple[dict[str, float], dict[str, Probs], dict[str, float]]:
    """Reject drift options that name unknown columns or impossible probabilities, before drawing anything."""
    shift, mix, missing = dict(shift or {}), dict(mix or {}), dict(missing or {})
    for option, given, allowed in (
        ("shift", shift, features.NUMERIC),
        ("category_mix", mix, features.CATEGORICAL),
        ("missing", missing, features.OPTIONAL),
    ):
        unknown = sorted(set(given) - set(allowed))
        if unknown:
            raise ValueError(f"{option} names {unknown}; allowed: {', '.join(allowed)}")
    for name, factor in shift.items():
        if not factor > 0:
            raise ValueError(f"shift factor for {name} must be > 0, got {factor}")
    for name, probs in [*((f"{k}={c}", p) for k, v in mix.items() for c, p in v.items()), *missing.items()]:
        if not 0 <= probs <= 1:
            raise ValueError(f"probability for {name} must be in [0, 1], got {probs}")
    for name, probs in mix.items():
        if sum(probs.values()) > 1 + 1e-9:
            raise ValueError(f"category_mix for {name} sums to {sum(probs.values()):.3f} > 1")
    return shift, mix, missing


def _mixed(probs: Probs, pinned: Probs | None) -> Probs:
    """`probs` with the `pinned` categories set to their given probabilities and the others scaled to fill up."""
    if not pinned:
        return probs
    rest = {k: p for k, p in probs.items() if k not in pinned}
    room, weight = 1 - sum(pinned.values()), sum(rest.values())
    if weight == 0 and room > 1e-9:
        raise ValueError(f"category mix {dict(pinned)} sums to less than 1 and leaves no other category to fill up")
    return {**{k: p * room / weight for k, p in rest.items()}, **pinned} if weight else dict(pinned)


def _draw(rng: np.random.Generator, probs: Probs, pinned: Probs | None, n: int) -> np.ndarray:
    mixed = _mixed(probs, pinned)
    p = np.array(list(mixed.values()))
    return rng.choice(np.array(list(mixed), dtype=object), size=n, p=p / p.sum())


def _draw_given(
    rng: np.random.Generator, parent: np.ndarray, table: Mapping[str, Probs], pinned: Probs | None
) -> np.ndarray:
    """Draw a category per row from the distribution conditioned on the row's `parent` category."""
    out = np.empty(len(parent), dtype=object)
    marginal = _marginal(table)
    for value in np.unique(parent):
        rows = parent == value
        out[rows] = _draw(rng, table.get(value, marginal), pinned, int(rows.sum()))
    return out


def _marginal(table: Mapping[str, Probs]) -> Probs:
    """Unweighted mean over the conditions: the fallback for a parent category outside the vocabulary."""
    keys = next(iter(table.values()))
    return {k: float(np.mean([row[k] for row in table.values()])) for k in keys}


def _options(args: argparse.Namespace) -> dict:
    """The drift options of the command line as `generate` keyword arguments; ValueError on a malformed one."""
    pairs = {flag: [item.partition("=") for item in getattr(args, flag)] for flag in ("shift", "mix", "missing")}
    for flag, items in pairs.items():
        for name, eq, value in items:
            if not (name.strip() and eq and value.strip()):
                raise ValueError(f"--{flag} expects NAME=VALUE, got {name}{eq}{value!r}")
    mix: dict[str, dict[str, float]] = {}
    for name, _, value in pairs["mix"]:
        category, colon, p = value.rpartition(":")
        if not (category.strip() and colon):
            raise ValueError(f"--mix expects COLUMN=CATEGORY:P, got {name}={value}")
        mix.setdefault(name.strip(), {})[category.strip()] = float(p)
    return {
        "shift": {name.strip(): float(value) for name, _, value in pairs["shift"]},
        "category_mix": mix,
        "missing": {name.strip(): float(value) for name, _, value in pairs["missing"]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=REAL_ROWS, help=f"rows to generate (default {REAL_ROWS})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="CSV file to write (canonical format)")
    parser.add_argument("--shift", action="append", default=[], metavar="COLUMN=FACTOR", help="e.g. person_income=1.5")
    parser.add_argument(
        "--mix", action="append", default=[], metavar="COLUMN=CATEGORY:P", help="e.g. loan_intent=VENTURE:0.6"
    )
    parser.add_argument("--missing", action="append", default=[], metavar="COLUMN=RATE", help="e.g. loan_int_rate=0.5")
    parser.add_argument(
        "--age-bias", type=float, default=0.0, metavar="B", help="make default depend on age band (e.g. 3; unfair)"
    )
    args = parser.parse_args(argv)
    try:
        df = generate(args.rows, args.seed, age_bias=args.age_bias, **_options(args))
    except ValueError as err:
        parser.error(str(err))
    print(dataset.write_canonical(df, args.out))
    print(f"{len(df)} rows, {df[features.LABEL].mean():.1%} positive", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
