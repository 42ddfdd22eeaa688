"""Benchmark: train the pipeline on a stratified 80% of the real data, score the pushed model on the other 20%.

The model is scored through its raw-feature signature `serving_default`, as a REST client would use it. Gradient
boosting on the same split is the reference. Writes `bench/results/train_quality.json`.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score
from sklearn.model_selection import train_test_split

from data.fetch import fetch
from monitoring.score_baseline import score
from tfx_modules import config, dataset, features

RESULTS = Path(__file__).parent / "results" / "train_quality.json"
SEED = 42


def _scores(y: np.ndarray, probability: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    return {
        "accuracy": round(float(accuracy_score(y, probability >= threshold)), 4),
        "roc_auc": round(float(roc_auc_score(y, probability)), 4),
        "pr_auc": round(float(average_precision_score(y, probability)), 4),
        "f1": round(float(f1_score(y, probability >= threshold)), 4),
    }


def gradient_boosting(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    def encode(frame: pd.DataFrame) -> pd.DataFrame:
        codes = {f.name: {v: i for i, v in enumerate(f.vocabulary)} for f in features.FEATURES if f.categorical}
        return pd.DataFrame({f.name: frame[f.name].map(codes.get(f.name, lambda v: v)) for f in features.FEATURES})

    categorical = [f.categorical for f in features.FEATURES]
    model = HistGradientBoostingClassifier(categorical_features=categorical, random_state=SEED)
    model.fit(encode(train), train[features.LABEL])
    return model.predict_proba(encode(test))[:, 1]


def main() -> int:
    from tfx_modules.outcome import component_seconds
    from tfx_modules.train import run_pipeline

    frame = dataset.read_batch(fetch(None, config.PROJECT_ROOT / "data" / "raw"))
    train, test = train_test_split(frame, test_size=0.2, stratify=frame[features.LABEL], random_state=SEED)
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
            print(f"not blessed: {outcome.reason}", file=sys.stderr)
            return 1
        mlp = _scores(test[features.LABEL].to_numpy(), score(outcome.model_path, test))
        seconds = component_seconds(settings, outcome.run_id)
    gbm = _scores(test[features.LABEL].to_numpy(), gradient_boosting(train, test))
    results = {
        "rows": {"train": len(train), "test": len(test)},
        "mlp_holdout": mlp,
        "gradient_boosting_holdout": gbm,
        "evaluator_eval_split": {k: round(v, 4) for k, v in outcome.metrics.items()},
        "pipeline_wall_seconds": round(wall, 1),
        "component_seconds": {k: round(v, 1) for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])},
        "beam_args": list(settings.beam_args),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "targets": {"accuracy": 0.93, "roc_auc": 0.94, "pipeline_wall_seconds": 120},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
