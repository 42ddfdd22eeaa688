"""The feature spec: the one source of truth for column names, types, defaults and valid values.

Transform, Trainer, the data validation and drift gate, the serving client, the data generator and the
tests all read this module, so a new feature or a changed default is made here once. It imports only the
standard library so that the Airflow environment can use it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LABEL = "loan_status"


@dataclass(frozen=True)
class Feature:
    """One raw input column.

    `default` imputes a missing value (only `optional` features may be missing). `valid` is the range (numeric)
    a value must lie in to be accepted by validation; `clip` is the narrower range the Transform clips to before
    scaling, which tames outliers such as an age of 144. `log` compresses a long tail before scaling.

    `monotone` = +1 is a lender's expectation the model must meet by construction: all else equal, the default score
    never falls as the value rises. A categorical feature with a direction is ordinal: its `vocabulary` runs from the
    least to the most risky value, and the model sees its position in it.
    """

    name: str
    dtype: type  # int, float or str: the type of the raw CSV column
    optional: bool = False
    default: float | str | None = None
    valid: tuple[float, float] | None = None
    clip: tuple[float, float] | None = None
    log: bool = False
    vocabulary: tuple[str, ...] = field(default=())
    monotone: int = 0  # +1: the score is non-decreasing in the value (in the vocabulary's order); 0: no constraint

    @property
    def categorical(self) -> bool:
        return self.dtype is str

    @property
    def ordinal(self) -> bool:
        """A categorical feature whose vocabulary is ordered by risk (it has a direction)."""
        return self.categorical and self.monotone != 0


FEATURES: tuple[Feature, ...] = (
    Feature("person_age", int, valid=(18, 150), clip=(18, 80)),
    Feature("person_income", int, valid=(1, 1e8), clip=(4_000, 1_000_000), log=True),
    Feature("person_home_ownership", str, vocabulary=("RENT", "MORTGAGE", "OWN", "OTHER")),
    Feature("person_emp_length", float, optional=True, default=4.0, valid=(0, 130), clip=(0, 40)),
    Feature(
        "loan_intent",
        str,
        vocabulary=("EDUCATION", "MEDICAL", "VENTURE", "PERSONAL", "DEBTCONSOLIDATION", "HOMEIMPROVEMENT"),
    ),
    Feature("loan_grade", str, vocabulary=("A", "B", "C", "D", "E", "F", "G"), monotone=+1),
    Feature("loan_amnt", int, valid=(1, 1e7), clip=(500, 35_000), log=True),
    Feature("loan_int_rate", float, optional=True, default=10.99, valid=(0, 100), clip=(5, 24), monotone=+1),
    Feature("loan_percent_income", float, valid=(0, 100), clip=(0, 0.85), monotone=+1),
    Feature("cb_person_default_on_file", str, vocabulary=("N", "Y"), monotone=+1),
    Feature("cb_person_cred_hist_length", int, valid=(0, 100), clip=(2, 30)),
)

BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}
NUMERIC: tuple[str, ...] = tuple(f.name for f in FEATURES if not f.categorical)
CATEGORICAL: tuple[str, ...] = tuple(f.name for f in FEATURES if f.categorical)
MONOTONE: tuple[str, ...] = tuple(f.name for f in FEATURES if f.monotone)
OPTIONAL: tuple[str, ...] = tuple(f.name for f in FEATURES if f.optional)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
# Column order of the Kaggle CSV, label included.
COLUMNS: tuple[str, ...] = (*FEATURE_NAMES[:8], LABEL, *FEATURE_NAMES[8:])
# loan_percent_income as an intake system computes it: round(loan_amnt / person_income, RATIO_DECIMALS). The public
# dataset's declared ratio is lower than that in 421 rows, all defaulted (a recording artifact: tfx_modules/model.py,
# DECLARED_RATIO_GAP), so headline figures are measured with the ratio recomputed; reports carry them under RECOMPUTED.
RATIO_DECIMALS = 2
RECOMPUTED = "recomputed_ratio"
# Slices reported by the Evaluator.
SLICE_FEATURES: tuple[str, ...] = ("loan_grade", "loan_intent")

# The baseline applicant that reason codes are measured against: the median (numeric) or most common (categorical)
# value among the real dataset's repaid loans, with the median interest rate of its grade (A) and a declared
# loan_percent_income consistent with its amount and income. Each attribution says how much a feature's actual
# value, instead of this applicant's, moves the score in log-odds.
BASELINE: dict[str, float | str] = {
    "person_age": 26,
    "person_income": 60_000,
    "person_home_ownership": "MORTGAGE",
    "person_emp_length": 4.0,
    "loan_intent": "EDUCATION",
    "loan_grade": "A",
    "loan_amnt": 8_000,
    "loan_int_rate": 7.49,
    "loan_percent_income": 0.13,
    "cb_person_default_on_file": "N",
    "cb_person_cred_hist_length": 4,
}


@dataclass(frozen=True)
class Reason:
    """The adverse-action reason for a feature that pushes a score towards default: a code and a plain-English
    sentence for a value above the baseline's (`high`), below it (`low`), or missing. A categorical feature has
    one sentence (`high`), with `{value}` standing for the applicant's value."""

    code: str
    high: str
    low: str = ""
    missing: str = ""


REASONS: dict[str, Reason] = {
    "person_age": Reason("AGE", "Applicant's age is above the reference applicant's", "Applicant is young"),
    "person_income": Reason("INCOME", "Income is high", "Income is low"),
    "person_home_ownership": Reason("HOME", "Home ownership status ({value})"),
    "person_emp_length": Reason(
        "EMPLOYMENT", "Employment length is long", "Employment length is short", "Employment length is not given"
    ),
    "loan_intent": Reason("INTENT", "Purpose of the loan ({value})"),
    "loan_grade": Reason("GRADE", "Loan grade ({value}) is a riskier grade"),
    "loan_amnt": Reason("AMOUNT", "Loan amount is large", "Loan amount is small"),
    "loan_int_rate": Reason(
        "RATE", "Interest rate is high for the loan", "Interest rate is low", "Interest rate is not given"
    ),
    "loan_percent_income": Reason(
        "BURDEN", "Loan amount is high relative to income", "Loan amount is low relative to income"
    ),
    "cb_person_default_on_file": Reason("PRIOR_DEFAULT", "Credit bureau record of a previous default ({value})"),
    "cb_person_cred_hist_length": Reason("HISTORY", "Credit history is long", "Credit history is short"),
}
REASON_COUNT = 4  # reasons returned per instance: the features pushing hardest towards default
assert set(BASELINE) == set(REASONS) == set(FEATURE_NAMES), "a feature without a baseline value or reason"
