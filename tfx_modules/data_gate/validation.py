"""TFDV checks of one batch: schema anomalies (reject the batch) and drift against the training data (retrain).

The schema is TFDV's inference on the reference statistics, tightened by the feature spec: its types, valid ranges
and vocabularies, and which features may be missing. So an unseen category, an out-of-range value, a missing
required value or a wrong type is a TFDV anomaly whatever the reference data happened to contain.
Runs in the ML environment (TFDV, pandas).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2

from common import features

if TYPE_CHECKING:
    import pandas as pd
    from tensorflow_metadata.proto.v0 import statistics_pb2

_TYPES = {int: schema_pb2.INT, float: schema_pb2.FLOAT, str: schema_pb2.BYTES}


def statistics(df: pd.DataFrame) -> statistics_pb2.DatasetFeatureStatisticsList:
    """Statistics of a canonical batch; float features are cast so a column of whole numbers is not an INT."""
    floats = [f.name for f in features.FEATURES if f.dtype is float and f.name in df]
    return tfdv.generate_statistics_from_dataframe(df.astype({name: "float64" for name in floats}))


def model_view(df: pd.DataFrame) -> pd.DataFrame:
    """The features as the model sees them: numeric values clipped, long tails log-compressed (float64)."""
    view = df[list(features.FEATURE_NAMES)].copy()
    for spec in features.FEATURES:
        if not spec.categorical:
            clipped = view[spec.name].astype("float64").clip(*spec.clip)
            view[spec.name] = np.log1p(clipped) if spec.log else clipped
    return view


def drift_statistics(df: pd.DataFrame) -> statistics_pb2.DatasetFeatureStatisticsList:
    """Statistics of `model_view(df)`, which drift is measured on.

    TFDV's Jensen-Shannon divergence compares equal-width histograms; on raw income (4k .. 6M) one outlier sets
    the bucket width and two halves of the same data measured 0.43. Clipped and logged, halves measure < 0.01.
    """
    return tfdv.generate_statistics_from_dataframe(model_view(df))


def _constrain(feature: schema_pb2.Feature, dtype: type, valid: tuple[float, float] | None, required: bool) -> None:
    feature.type = _TYPES[dtype]
    feature.ClearField("domain_info")
    if valid is not None and dtype is int:
        feature.int_domain.min, feature.int_domain.max = int(valid[0]), int(valid[1])
    elif valid is not None:
        feature.float_domain.min, feature.float_domain.max = valid
    feature.presence.min_fraction = 1.0 if required else 0.0
    feature.presence.min_count = 1 if required else 0


def schema(reference: statistics_pb2.DatasetFeatureStatisticsList) -> schema_pb2.Schema:
    """The schema a batch must satisfy: inferred from `reference` (raw statistics of the training data, or of the
    batch itself before the first model), then overridden by the feature spec."""
    inferred = tfdv.infer_schema(reference)
    missing = set(features.COLUMNS) - {f.name for f in inferred.feature}
    if missing:
        raise ValueError(f"reference statistics lack columns {sorted(missing)}")
    del inferred.string_domain[:]  # inferred vocabularies: the spec's below are the only ones
    for spec in features.FEATURES:
        feature = tfdv.get_feature(inferred, spec.name)
        _constrain(feature, spec.dtype, spec.valid, required=not spec.optional)
        if spec.categorical:
            feature.string_domain.value.extend(spec.vocabulary)
            feature.distribution_constraints.min_domain_mass = 1.0
    _constrain(tfdv.get_feature(inferred, features.LABEL), int, (0, 1), required=True)
    return inferred


def anomalies(batch: statistics_pb2.DatasetFeatureStatisticsList, expected: schema_pb2.Schema) -> dict[str, str]:
    """Schema anomalies of `batch` by column (empty when the batch is acceptable)."""
    found = tfdv.validate_statistics(batch, expected)
    return {name: info.description for name, info in sorted(found.anomaly_info.items())}


def drift(
    batch: statistics_pb2.DatasetFeatureStatisticsList,
    baseline: statistics_pb2.DatasetFeatureStatisticsList,
    thresholds: dict[str, float],
) -> dict[str, dict]:
    """Per feature: distance of `batch` from `baseline` (JSD numeric, L-infinity categorical) against its threshold.

    Both are `drift_statistics`.
    """
    with_comparators = tfdv.infer_schema(baseline)
    for spec in features.FEATURES:
        comparator = tfdv.get_feature(with_comparators, spec.name).drift_comparator
        kind = comparator.infinity_norm if spec.categorical else comparator.jensen_shannon_divergence
        kind.threshold = thresholds[spec.name]
    found = tfdv.validate_statistics(batch, with_comparators, previous_statistics=baseline)
    measured = {info.path.step[0]: info.drift_measurements[0] for info in found.drift_skew_info}
    result = {}
    for spec in features.FEATURES:
        if spec.name not in measured:
            raise ValueError(f"TFDV measured no drift for {spec.name}: is it absent from the batch or the baseline?")
        value = float(measured[spec.name].value)
        result[spec.name] = {
            "measure": "l_infinity" if spec.categorical else "jensen_shannon",
            "value": value,
            "threshold": thresholds[spec.name],
            "drifted": value > thresholds[spec.name],
        }
    return result


def write_statistics(stats: statistics_pb2.DatasetFeatureStatisticsList, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tfdv.write_stats_text(stats, str(path))


def load_statistics(path: Path) -> statistics_pb2.DatasetFeatureStatisticsList:
    return tfdv.load_stats_text(str(path))


def write_schema(expected: schema_pb2.Schema, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tfdv.write_schema_text(expected, str(path))


def load_schema(path: Path) -> schema_pb2.Schema:
    return tfdv.load_schema_text(str(path))
