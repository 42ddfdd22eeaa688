"""Benchmark: on stratified 80/20 splits of the real data with three seeds, train the pipeline on the 80 % and score
the pushed model on the 20 %; train and score a LightGBM baseline (default settings) on the same splits.

The model is scored through its raw-feature signature `serving_default`, as a REST client would use it. Per split and
on average: accuracy, ROC-AUC, PR-AUC, F1, expected calibration error, how many probabilities are exactly 0 or 1, how
many are >= 0.9999 and the default rate among those, and the pipeline's wall time. LightGBM comes from
requirements/bench.in (`make bench` installs it). Writes `bench/results/train_quality.json`; with
`--without-derived-inputs` (the ablation: what the derived inputs of tfx_modules/model.py add), the model is trained
without them (CREDIT_RISK_DERIVED_INPUTS=off) and the results go to
`bench/results/train_quality_without_derived_inputs.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score
from sklearn.model_selection import train_test_split

from common import config, features
from data.fetch import fetch
from live_monitoring.score_baseline import score
from tfx_modules.data_gate import dataset
from tfx_modules.evaluation import calibration

RESULTS = Path(__file__).parent / "results" / "train_quality.json"
ABLATION_RESULTS = RESULTS.with_name("train_quality_without_derived_inputs.json")
SEEDS = (42, 43, 44)
NEAR_CERTAIN = 0.9999
TARGETS = {
    "roc_auc": 0.955,  # at least, on every split
    "accuracy": 0.938,  # at least, on every split
    "expected_calibration_error": 0.02,  # at most
    "exactly_0_or_1": 0,  # at most
    "pipeline_wall_seconds": 90,  # at most, on 26,064 training rows
}


def scores(y: np.ndarray, probability: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    return {
        "accuracy": round(float(accuracy_score(y, probability >= threshold)), 4),
        "roc_auc": round(float(roc_auc_score(y, probability)), 4),
        "pr_auc": round(float(average_precision_score(y, probability)), 4),
        "f1": round(float(f1_score(y, probability >= threshold)), 4),
        "expected_calibration_error": round(calibration.expected_calibration_error(probability, y), 4),
        "exactly_0_or_1": int(((probability == 0) | (probability == 1)).sum()),
        f"at_least_{NEAR_CERTAIN}": int((probability >= NEAR_CERTAIN).sum()),
        f"default_rate_at_least_{NEAR_CERTAIN}": round(float(y[probability >= NEAR_CERTAIN].mean()), 4)
        if (probability >= NEAR_CERTAIN).any()
        else None,
    }


def lightgbm(train: pd.DataFrame, test: pd.DataFrame, seed: int) -> np.ndarray:
    """LightGBM with default settings on the raw features (categories as pandas categoricals, NaN = missing)."""
    import lightgbm as lgb

    def encode(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[list(features.FEATURE_NAMES)].astype(
            {f.name: pd.CategoricalDtype(f.vocabulary) for f in features.FEATURES if f.categorical}
        )

    model = lgb.LGBMClassifier(random_state=seed, verbose=-1).fit(encode(train), train[features.LABEL])
    return model.predict_proba(encode(test))[:, 1]


def one_split(frame: pd.DataFrame, seed: int) -> dict:
    from tfx_modules.reporting.run_result import component_seconds
    from tfx_modules.train import run_pipeline

    train, test = train_test_split(frame, test_size=0.2, stratify=frame[features.LABEL], random_state=seed)
    y = test[features.LABEL].to_numpy()
    load_average = os.getloadavg()[0]  # the machine is shared: how busy it was when this split started
    with tempfile.TemporaryDirectory(prefix="bench-train-") as home:
        os.environ["CREDIT_RISK_HOME"] = home
        settings = config.settings()
        data_root = Path(home) / "input"
        data_root.mkdir()
        dataset.write_canonical(train, data_root / "train.csv")
        started = time.monotonic()
        outcome = run_pipeline(data_root, settings.model_dir, settings)
        wall = time.monotonic() - started
        if outcome.model_path is None:
            raise RuntimeError(f"seed {seed}: not blessed: {outcome.reason}")
        model = scores(y, score(outcome.model_path, test))
        seconds = component_seconds(settings, outcome.run_id)
    return {
        "seed": seed,
        "rows": {"train": len(train), "test": len(test)},
        "model_holdout": model,
        "lightgbm_holdout": scores(y, lightgbm(train, test, seed)),
        "evaluator_eval_split": {k: None if v is None else round(v, 4) for k, v in outcome.metrics.items()},
        "members_eval_split": {
            name: {k: round(v, 4) for k, v in values.items()} for name, values in outcome.members["members"].items()
        },
        "blend": {k: round(v, 4) for k, v in outcome.members["blend"].items()},
        "pipeline_wall_seconds": round(wall, 1),
        "load_average_at_start": round(load_average, 2),
        "component_seconds": {k: round(v, 1) for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])},
    }


def _mean(splits: list[dict], key: str) -> dict[str, float | None]:
    def mean(values: list) -> float | None:
        return None if None in values else round(float(np.mean(values)), 4)

    return {name: mean([s[key][name] for s in splits]) for name in splits[0][key]}


def _targets_met(splits: list[dict]) -> dict[str, bool]:
    models = [s["model_holdout"] for s in splits]
    return {
        "roc_auc": all(m["roc_auc"] >= TARGETS["roc_auc"] for m in models),
        "accuracy": all(m["accuracy"] >= TARGETS["accuracy"] for m in models),
        "expected_calibration_error": all(
            m["expected_calibration_error"] <= TARGETS["expected_calibration_error"] for m in models
        ),
        "exactly_0_or_1": all(m["exactly_0_or_1"] <= TARGETS["exactly_0_or_1"] for m in models),
        "pipeline_wall_seconds": all(s["pipeline_wall_seconds"] <= TARGETS["pipeline_wall_seconds"] for s in splits),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--without-derived-inputs", action="store_true", help="the ablation: train without them")
    args = parser.parse_args()
    if args.without_derived_inputs:
        os.environ["CREDIT_RISK_DERIVED_INPUTS"] = "off"
    path = ABLATION_RESULTS if args.without_derived_inputs else RESULTS
    frame = dataset.read_batch(fetch(None, config.PROJECT_ROOT / "data" / "raw"))
    splits = [one_split(frame, seed) for seed in SEEDS]
    results = {
        "derived_inputs": config.settings().derived_inputs,
        "seeds": list(SEEDS),
        "mean": {
            "model_holdout": _mean(splits, "model_holdout"),
            "lightgbm_holdout": _mean(splits, "lightgbm_holdout"),
            "pipeline_wall_seconds": round(float(np.mean([s["pipeline_wall_seconds"] for s in splits])), 1),
        },
        "targets": TARGETS,
        "targets_met": _targets_met(splits),
        "splits": splits,
        "beam_args": list(config.settings().beam_args),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
