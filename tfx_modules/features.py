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
    """

    name: str
    dtype: type  # int, float or str: the type of the raw CSV column
    optional: bool = False
    default: float | str | None = None
    valid: tuple[float, float] | None = None
    clip: tuple[float, float] | None = None
    log: bool = False
    vocabulary: tuple[str, ...] = field(default=())

    @property
    def categorical(self) -> bool:
        return self.dtype is str


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
    Feature("loan_grade", str, vocabulary=("A", "B", "C", "D", "E", "F", "G")),
    Feature("loan_amnt", int, valid=(1, 1e7), clip=(500, 35_000), log=True),
    Feature("loan_int_rate", float, optional=True, default=10.99, valid=(0, 100), clip=(5, 24)),
    Feature("loan_percent_income", float, valid=(0, 100), clip=(0, 0.85)),
    Feature("cb_person_default_on_file", str, vocabulary=("N", "Y")),
    Feature("cb_person_cred_hist_length", int, valid=(0, 100), clip=(2, 30)),
)

BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}
NUMERIC: tuple[str, ...] = tuple(f.name for f in FEATURES if not f.categorical)
CATEGORICAL: tuple[str, ...] = tuple(f.name for f in FEATURES if f.categorical)
OPTIONAL: tuple[str, ...] = tuple(f.name for f in FEATURES if f.optional)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
# Column order of the Kaggle CSV, label included.
COLUMNS: tuple[str, ...] = (*FEATURE_NAMES[:8], LABEL, *FEATURE_NAMES[8:])
# Slices reported by the Evaluator.
SLICE_FEATURES: tuple[str, ...] = ("loan_grade", "loan_intent")
