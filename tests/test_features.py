"""The feature spec is consistent with itself and with the real dataset's layout."""

from __future__ import annotations

import pytest

from common import features


def test_columns_are_the_kaggle_csvs_in_order() -> None:
    assert features.COLUMNS == (
        "person_age",
        "person_income",
        "person_home_ownership",
        "person_emp_length",
        "loan_intent",
        "loan_grade",
        "loan_amnt",
        "loan_int_rate",
        "loan_status",
        "loan_percent_income",
        "cb_person_default_on_file",
        "cb_person_cred_hist_length",
    )
    assert features.LABEL not in features.FEATURE_NAMES


@pytest.mark.parametrize("feature", features.FEATURES, ids=lambda f: f.name)
def test_each_feature_is_fully_described(feature: features.Feature) -> None:
    if feature.categorical:
        assert feature.vocabulary and len(set(feature.vocabulary)) == len(feature.vocabulary)
        assert feature.clip is None and feature.valid is None
    else:
        low, high = feature.clip
        assert feature.valid[0] <= low < high <= feature.valid[1]
        assert not feature.vocabulary
    assert (feature.default is not None) == feature.optional
    if feature.optional:
        assert feature.clip[0] <= feature.default <= feature.clip[1]


def test_partitions() -> None:
    assert set(features.NUMERIC) | set(features.CATEGORICAL) == set(features.FEATURE_NAMES)
    assert set(features.OPTIONAL) == {"person_emp_length", "loan_int_rate"}
    assert set(features.SLICE_FEATURES) <= set(features.CATEGORICAL)
