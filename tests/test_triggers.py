"""dags/decisions/triggers.py, the link from live monitoring to retraining, as a table: whether a monitoring run asks
for retraining (`why_not_retrain`), which batches are newer than the serving model, and the reason a retraining run
started by a live-drift or a decay Asset event gives (`live_drift_reason`, `decay_reason`).

The module imports `airflow.sdk` (Assets), so the table runs in the Airflow environment, in one process: the
events are keyed by the real Assets (or by an Asset's name or URI, as Airflow may hand them) and carry an `extra`."""

from __future__ import annotations

import json
import subprocess

import pytest

from common import config
from testing.harness import AIRFLOW_PYTHON

PROBE = """
import json, sys
from types import SimpleNamespace
sys.path.insert(0, sys.argv[1])
from dags.decisions import triggers

ASSETS = {"live_drift": triggers.LIVE_DRIFT, "decay": triggers.PERFORMANCE_DECAY}

def events(spec):  # {"live_drift": [extra, ...], "name:credit_risk_live_drift": [...]} -> Airflow's mapping
    if spec is None:
        return None
    def key(k):
        how, _, which = k.rpartition(":")
        return ASSETS[which] if not how else getattr(ASSETS[which], how)
    return {key(k): [SimpleNamespace(extra=extra) for extra in found] for k, found in spec.items()}

out = []
for function, args in json.load(sys.stdin):
    if function in ("live_drift_reason", "decay_reason"):
        args = [events(args[0])]
    out.append(getattr(triggers, function)(*args))
print(json.dumps(out))
"""

DRIFT = {"verdict": "drift"}
A, B = {"name": "a.csv", "sha256": "aa"}, {"name": "b.csv", "sha256": "bb"}
DRIFTED = {"drifted": ["person_income", "score"], "run_id": "m1"}
DECAYED = {"reason": "realized AUC 0.71 of version 3 is below its floor 0.80", "run_id": "m2"}
DECAY_LINE = "realized AUC 0.71 of version 3 is below its floor 0.80 (monitoring run m2)"

CASES = [
    # why_not_retrain(record, enabled, newer batches)
    ("why_not_retrain", [{"verdict": "no drift"}, True, ["b.csv"]], "no live drift"),
    ("why_not_retrain", [{"verdict": "too few predictions"}, True, ["b.csv"]], "no live drift"),
    ("why_not_retrain", [DRIFT, False, ["b.csv"]], "live drift alerts only (CREDIT_RISK_LIVE_DRIFT_RETRAIN is off)"),
    ("why_not_retrain", [DRIFT, True, []], "no labelled data newer than the serving model"),
    ("why_not_retrain", [DRIFT, True, ["b.csv"]], None),
    # newer_labelled_batches(serving model's lineage, accepted batches)
    ("newer_labelled_batches", [None, [A, B]], ["a.csv", "b.csv"]),
    ("newer_labelled_batches", [{"batches": ["aa"]}, [A, B]], ["b.csv"]),
    ("newer_labelled_batches", [{"batches": ["aa", "bb"]}, [A, B]], []),
    ("newer_labelled_batches", [{"batches": []}, []], []),
    # live_drift_reason(triggering events)
    ("live_drift_reason", [None], None),
    ("live_drift_reason", [{}], None),
    ("live_drift_reason", [{"live_drift": []}], None),
    ("live_drift_reason", [{"decay": [DECAYED]}], None),
    ("live_drift_reason", [{"live_drift": [DRIFTED]}], "person_income, score (monitoring run m1)"),
    ("live_drift_reason", [{"live_drift": [{"drifted": [], "run_id": "m1"}]}], "live traffic (monitoring run m1)"),
    ("live_drift_reason", [{"name:live_drift": [DRIFTED]}], "person_income, score (monitoring run m1)"),
    ("live_drift_reason", [{"uri:live_drift": [DRIFTED]}], "person_income, score (monitoring run m1)"),
    (
        "live_drift_reason",  # the newest of two events counts
        [{"live_drift": [{"drifted": ["loan_intent"], "run_id": "m0"}, DRIFTED]}],
        "person_income, score (monitoring run m1)",
    ),
    (
        "live_drift_reason",  # both Assets fired: each reason reads its own
        [{"decay": [DECAYED], "live_drift": [DRIFTED]}],
        "person_income, score (monitoring run m1)",
    ),
    # decay_reason(triggering events)
    ("decay_reason", [None], None),
    ("decay_reason", [{"live_drift": [DRIFTED]}], None),
    (
        "decay_reason",
        [{"decay": [DECAYED]}],
        DECAY_LINE,
    ),
    ("decay_reason", [{"decay": [{"run_id": "m2"}]}], "performance decay (monitoring run m2)"),
    (
        "decay_reason",
        [{"decay": [DECAYED], "live_drift": [DRIFTED]}],
        DECAY_LINE,
    ),
]


@pytest.fixture(scope="module")
def answers() -> list:
    """Every case's answer, computed by the real module in the Airflow environment in one process (~5 s)."""
    result = subprocess.run(
        [str(AIRFLOW_PYTHON), "-c", PROBE, str(config.PROJECT_ROOT)],
        input=json.dumps([[function, args] for function, args, _ in CASES]),
        env={"PATH": "/usr/bin:/bin", "PYTHONWARNINGS": "ignore"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_trigger_table(answers: list, case: int) -> None:
    function, args, expected = CASES[case]
    assert answers[case] == expected, f"{function}{tuple(args)}"
