"""Outcomes end to end: a model trained on real rows served behind the gateway, held-out real rows with application
ids replayed through the REST API, their outcomes delivered later in two files, and the monitoring runs in between.

One scenario, `test_outcomes_from_scoring_to_retraining`, in one state directory, step by step (a failure names
its step): CBPE's estimate before any outcome; partial labels after the first file, an
unknown id waiting and an outcome that arrived before its prediction; realized AUC after the second file equal to
the offline AUC of the same SavedModel on the same rows (within 0.002) and within 0.03 of the estimate made before;
a conflicting file quarantined; the monitoring DAG alerting on decay (a floor the model cannot meet), sending its
gauges and updating the decay Asset with the reason; the joined outcomes as an incoming batch that a forced
retraining DAG run trains on, with the lineage naming the predictions that fed the new version.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from common import config
from common.features import LABEL
from serving import process, traffic
from testing import airflow_sandbox
from testing.harness import monitor_dag_run, run_steps
from tests.conftest import train_recorded
from tests.test_live_monitoring import TRAIN_ROWS, logged, real_rows
from tfx_modules.data_gate import dataset

pytestmark = pytest.mark.slow
SCORED = 3000  # held-out rows replayed, whose outcomes come later
LATE = 200  # rows whose outcomes arrive before they are scored


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A home with a model trained on real rows and its lineage, the model server and the gateway in front, and the
    held-out rows (with their ids) to replay."""
    home = tmp_path_factory.mktemp("outcomes")
    frame = real_rows()
    held_out = frame.sample(SCORED + LATE, random_state=11)
    training = frame.drop(held_out.index).sample(TRAIN_ROWS, random_state=11)
    held_out = held_out.reset_index(drop=True).assign(application_id=[f"loan-{i}" for i in range(SCORED + LATE)])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CREDIT_RISK_HOME", str(home))
        model = train_recorded(home, training)
        rows = traffic.read_csv(dataset.write_canonical(held_out, home / "held_out.csv"))
        rows = [{**row, "application_id": app} for row, app in zip(rows, held_out["application_id"], strict=True)]
        with (
            process.local_server(home / "models" / config.MODEL_NAME) as server,
            process.local_gateway(server, "--prediction-log", str(home / "predictions")) as gateway,
        ):
            yield {"home": home, "gateway": gateway, "model": model, "rows": rows, "held_out": held_out}


def replay(served: dict, rows: list[dict]) -> None:
    from testing.harness import wait_for

    before = logged(served["gateway"])
    sent = traffic.replay(served["gateway"], rows, rate=400)
    assert sent["failed"] == 0, sent["failures"]
    wait_for(lambda: logged(served["gateway"]) >= before + len(rows), timeout=30, what="the log writer")


def monitor(served: dict, run_id: str) -> dict:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CREDIT_RISK_HOME", str(served["home"]))
        from live_monitoring import monitor as live_monitor

        return live_monitor.run(run_id, {"min_predictions": 50})


def deliver(served: dict, name: str, frame: pd.DataFrame) -> None:
    folder = served["home"] / "outcomes" / "incoming"
    folder.mkdir(parents=True, exist_ok=True)
    frame[["application_id", LABEL]].to_csv(folder / name, index=False)


def estimate_before_outcomes_then_partial_then_realized_equal_to_offline(served: dict) -> None:
    held_out, version = served["held_out"], served["model"]["version"]
    scored, late = held_out.iloc[:SCORED], held_out.iloc[SCORED:]
    deliver(served, "early.csv", late)  # outcomes of applications not scored yet
    replay(served, served["rows"][:SCORED])
    before = monitor(served, "before-outcomes")
    performance = before["performance"]
    (early,) = performance["files"]
    assert (early["status"], early["new"], early["waiting"]) == ("accepted", LATE, LATE)
    estimate = performance["versions"][str(version)]["estimated"]["auc"]
    assert before["outcome"].endswith(f"; estimated auc={estimate:.3f} (version {version})")
    assert performance["labelled"] == 0 and performance["waiting"] == LATE

    unknown = pd.DataFrame({"application_id": ["never-scored"], LABEL: [1]})
    deliver(served, "first.csv", pd.concat([scored.iloc[:1500], unknown]))
    partial = monitor(served, "first-outcomes")["performance"]
    found = partial["versions"][str(version)]
    assert (found["labelled"], found["unlabelled"]) == (1500, SCORED - 1500)
    assert partial["files"][0]["waiting"] == 1 and partial["waiting"] == LATE + 1

    deliver(served, "second.csv", scored.iloc[1500:])
    record = monitor(served, "second-outcomes")
    realized = record["performance"]["versions"][str(version)]["realized"]
    assert record["outcome"].endswith(f"; realized auc={realized['auc']:.3f} ({SCORED} labelled, version {version})")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CREDIT_RISK_HOME", str(served["home"]))
        from live_monitoring import score_baseline

        offline = score_baseline.score(served["model"]["model_path"], scored)
    assert offline.min() > 0 and offline.max() < 1  # calibrated, never exactly 0 or 1
    assert abs(realized["auc"] - roc_auc_score(scored[LABEL], offline)) < 0.002
    # CBPE is as right as the model's calibration: on 5,000 training rows the held-out ECE runs up to about 0.03
    # and the estimate has missed by 0.0203 (0.956 estimated, 0.936 realized; ECE 0.026).
    assert abs(estimate - realized["auc"]) < 0.03, (estimate, realized["auc"])
    assert realized["ece"] < 0.05 and realized["ks"] > 0 and realized["gini"] == pytest.approx(2 * realized["auc"] - 1)
    assert record["performance"]["batch"]["rows"] == 1500  # each run's newly joined predictions

    replay(served, served["rows"][SCORED:])  # the early outcomes join now
    joined = monitor(served, "late-predictions")["performance"]
    assert joined["labelled"] == SCORED + LATE and joined["waiting"] == 1
    assert joined["batch"]["rows"] == LATE


def a_conflicting_outcome_file_is_quarantined(served: dict) -> None:
    flipped = served["held_out"].iloc[:5].assign(**{LABEL: lambda f: 1 - f[LABEL]})
    deliver(served, "conflict.csv", flipped)
    performance = monitor(served, "conflict")["performance"]
    assert performance["quarantined"] == ["conflict.csv"]
    (entry,) = performance["files"]
    assert entry["reason"].startswith("conflicting outcomes for 5 application(s)")
    assert Path(entry["path"]).is_file() and performance["labelled"] == SCORED + LATE


def the_dag_alerts_on_decay_publishes_and_asks_for_retraining_with_the_reason(served: dict) -> None:
    """The monitoring DAG for real (`airflow dags test`), with a blessing floor the served model cannot meet."""
    home, version, labelled = served["home"], served["model"]["version"], SCORED + LATE
    run = monitor_dag_run(home, CREDIT_RISK_MIN_AUC="0.99")
    found = re.search(rf"; realized auc=(0\.\d{{3}}) \({labelled} labelled, version {version}\)$", run.lines[-1])
    assert found, run.lines[-1]
    assert run.subjects == [f"[credit-risk] performance decay: model version {version}"]
    assert any(f"of version {version} is below the blessing floor 0.990" in text for text in run.slack)
    gauges = run.gauges
    assert gauges["credit_risk.performance.decay"] == 1 and gauges["credit_risk.performance.auc_floor"] == 0.99
    assert gauges[f"credit_risk.performance.labelled.{version}"] == labelled
    assert 0.8 < gauges[f"credit_risk.performance.realized.auc.{version}"] < 0.99
    floor = f"realized AUC {found.group(1)} of version {version} is below the blessing floor 0.990"
    assert [e["reason"] for e in run.asset_extras] == [floor]


def a_forced_dag_run_trains_on_the_joined_outcomes(served: dict) -> None:
    home = served["home"]
    incoming = sorted(p.name for p in (home / "incoming").iterdir())
    assert incoming == ["outcomes-first-outcomes.csv", "outcomes-late-predictions.csv", "outcomes-second-outcomes.csv"]
    with airflow_sandbox.sandbox(home) as env:
        result = airflow_sandbox.run_dag_process(
            {"PATH": "/usr/bin:/bin", **env}, conf={"force_retrain": True}, timeout=1500
        )
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0 and lines and lines[-1].startswith("retrained version="), result.stderr[-3000:]
    version = int(lines[-1].removeprefix("retrained version=").split()[0])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CREDIT_RISK_HOME", str(home))
        from common.records import batch_ledger
        from outcomes import training_batches as outcome_batches

        (model,) = (m for m in batch_ledger.lineage()["models"] if m["version"] == version)
        assert model["rows"] == TRAIN_ROWS + SCORED + LATE
        fed = outcome_batches.fed(version)
    assert sorted(fed) == sorted(served["held_out"]["application_id"])
    assert list((home / "incoming").iterdir()) == []
    # blessed on real rows (5,000 + the 3,200 joined): the first model's realized AUC on held-out rows is about 0.94
    assert 0.9 < model["metrics"]["auc"] < 1


def test_outcomes_from_scoring_to_retraining(served: dict) -> None:
    """Outcomes as they arrive for one served model, in this order, each step on what the steps before it left."""
    run_steps(
        [
            estimate_before_outcomes_then_partial_then_realized_equal_to_offline,
            a_conflicting_outcome_file_is_quarantined,
            the_dag_alerts_on_decay_publishes_and_asks_for_retraining_with_the_reason,
            a_forced_dag_run_trains_on_the_joined_outcomes,
        ],
        served,
    )
