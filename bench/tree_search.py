"""The tree settings tried for the model (tfx_modules/model.py: TREES), on `make bench`'s three seeds' splits of the
real data with loan_percent_income recomputed (the mean, and each seed's figures): each candidate trains as the
Trainer does (an 80/20 train / eval split of the 80 %, early stopping and Platt scaling on the eval part) and is
scored on the held-out 20 %. Seconds per candidate, no pipeline: the raw features go to YDF as the Transform would
hand them over up to monotone rescaling (numbers as they are, ordinal categories as their position in the spec's
vocabulary, nominal ones as strings).

Besides settings: without the monotonic constraints (what they cost), analyst inputs a credit officer would name
(credit history and employment short for the applicant's age), and a refit on train + eval with the early-stopped
tree count (more rows, but the eval split the Evaluator judges would then be in-sample), and Platt scaling with one
slope instead of two. Writes bench/results/tree_search.json, which `make bench` copies under `tried`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from bench.quality import recompute, scores
from common import config, features
from data.fetch import fetch
from tfx_modules import model
from tfx_modules.data_gate import dataset

RESULTS = Path(__file__).parent / "results" / "tree_search.json"
SEEDS = (42, 43, 44)  # as bench/train_quality.py's
BEFORE = {"num_trees": 1000, "max_depth": 6, "shrinkage": 0.05}  # the settings before the search
# name: (tree settings, models averaged, monotone, analyst inputs, refit on train + eval, one-slope Platt scaling)
CANDIDATES = {
    "before: depth 6, shrinkage 0.05": (BEFORE, 1, True, False, False, False),
    "before, unconstrained": (BEFORE, 1, False, False, False, False),
    "depth 4": ({**BEFORE, "max_depth": 4}, 1, True, False, False, False),
    "depth 8": ({**BEFORE, "max_depth": 8}, 1, True, False, False, False),
    "shrinkage 0.02, 3000 trees": ({**BEFORE, "shrinkage": 0.02, "num_trees": 3000}, 1, True, False, False, False),
    "L2 1, min examples 10": ({**BEFORE, "l2_regularization": 1.0, "min_examples": 10}, 1, True, False, False, False),
    "shipped: rows 0.8, attributes 0.8": (model.TREES, 1, True, False, False, False),
    "shipped, one-slope Platt scaling": (model.TREES, 1, True, False, False, True),
    "shipped, unconstrained": (model.TREES, 1, False, False, False, False),
    "shipped, 3 seeds averaged": (model.TREES, 3, True, False, False, False),
    "shipped + analyst inputs": (model.TREES, 1, True, True, False, False),
    "shipped, refit on train + eval": (model.TREES, 1, True, False, True, False),
}


def columns(frame: pd.DataFrame, analyst: bool) -> dict[str, np.ndarray]:
    """The raw features as YDF reads them (see the module's docstring), plus the analyst inputs when asked."""
    out = {}
    for f in features.FEATURES:
        values = frame[f.name]
        out[f.name] = values.map(f.vocabulary.index).to_numpy(float) if f.ordinal else values.to_numpy()
    if analyst:
        working_years = (frame["person_age"] - 17).clip(lower=1)
        out["history_for_age"] = (frame["cb_person_cred_hist_length"] / working_years).to_numpy()
        out["employment_for_age"] = (frame["person_emp_length"] / working_years).to_numpy()
    return out


def candidate(train: pd.DataFrame, test: pd.DataFrame, settings: tuple, seed: int) -> dict:
    """Train one candidate as the Trainer would and score it on `test`."""
    trees, count, monotone, analyst, refit, one_slope = settings
    fit, evaluation = train_test_split(train, test_size=0.2, stratify=train[features.LABEL], random_state=0)
    label = features.LABEL
    started = time.monotonic()
    parts = {
        name: (columns(part, analyst), part[label].to_numpy()) for name, part in (("fit", fit), ("eval", evaluation))
    }
    models = model.train_trees(parts["fit"], parts["eval"], seed, trees, count, monotone)
    eval_logit = model.trees_logit(models, parts["eval"][0])
    platt = model.fit_platt(parts["eval"][1], eval_logit)
    if one_slope:
        one = LogisticRegression(C=1e6).fit(eval_logit.reshape(-1, 1), parts["eval"][1])
        platt = model.Platt(float(one.coef_[0, 0]), 0.0, float(one.intercept_[0]))
    if refit:
        fixed = {**trees, "num_trees": models[0].num_trees(), "early_stopping": "NONE", "validation_ratio": 0.0}
        whole = (columns(train, analyst), train[label].to_numpy())
        models = [
            model.ydf.GradientBoostedTreesLearner(
                label=label,
                features=model.tree_features(monotone),
                include_all_columns=True,
                apply_link_function=False,
                use_hessian_gain=True,
                random_seed=seed,
                **fixed,
            ).train({**whole[0], label: whole[1]}, verbose=0)
        ]
    logit = platt.calibrated(model.trees_logit(models, columns(test, analyst)))
    probability = model._probability(logit).numpy()
    return {
        **scores(test[label].to_numpy(), probability),
        "trees": [m.num_trees() for m in models],
        "seconds": round(time.monotonic() - started, 1),
    }


def main() -> int:
    frame = recompute(dataset.read_batch(fetch(None, config.PROJECT_ROOT / "data" / "raw")))
    splits = {
        seed: train_test_split(frame, test_size=0.2, stratify=frame[features.LABEL], random_state=seed)
        for seed in SEEDS
    }
    results = {}
    for name, settings in CANDIDATES.items():
        per_seed = {seed: candidate(train, test, settings, seed) for seed, (train, test) in splits.items()}
        mean = {k: round(float(np.mean([r[k] for r in per_seed.values()])), 4) for k in ("roc_auc", "accuracy")}
        results[name] = {"settings": settings[0], "models": settings[1], "mean": mean, "per_seed": per_seed}
        print(f"{name:40} ROC-AUC {mean['roc_auc']:.4f} accuracy {mean['accuracy']:.4f}", flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"seeds": SEEDS, "mode": "recomputed", "candidates": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
