"""Live monitoring for real: a model trained on real rows (with its lineage, as the DAG records it), the local model
server behind the gateway, traffic replayed through the REST API, the prediction log, the monitor's verdicts and
the monitoring DAG run with `airflow dags test`.

One module-wide state directory, in order: concurrent requests each give one record; held-out real rows read as no
drift; a scaled numeric feature and a changed category share are named exactly; a small window gives no verdict; a
rerun does not count twice; the DAG alerts, sends its gauges and asks for retraining; kill -9 of a gateway under
load loses at most a second of records.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pandas as pd
import pytest

from common import config
from data import fetch
from live_monitoring import window
from serving import client, logged_predictions, process, traffic
from serving.prediction_log import segments
from testing.environment import require
from testing.harness import monitor_dag_run, wait_for
from tests.conftest import ml_env, train_recorded
from tfx_modules.data_gate import dataset

pytestmark = pytest.mark.slow
TRAIN_ROWS = 5000
REPLAY = 600


def real_rows() -> pd.DataFrame:
    source = config.settings().dataset or fetch.SHARED_DATASET
    require(source.is_file(), f"the real dataset is not at {source}")
    return dataset.read_batch(source)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A home with a model trained on real rows and its lineage; the model server and the gateway in front."""
    home = tmp_path_factory.mktemp("live")
    frame = real_rows()
    held_out = frame.sample(frac=0.2, random_state=3)
    training = frame.drop(held_out.index).sample(TRAIN_ROWS, random_state=3)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CREDIT_RISK_HOME", str(home))
        model = train_recorded(home, training)
        rows = traffic.read_csv(dataset.write_canonical(held_out, home / "held_out.csv"))
        with (
            process.local_server(home / "models" / config.MODEL_NAME) as server,
            process.local_gateway(server, "--prediction-log", str(home / "predictions")) as gateway,
        ):
            yield {"home": home, "server": server, "gateway": gateway, "version": model["version"], "rows": rows}


@pytest.fixture(autouse=True)
def fresh_window(live: dict, request: pytest.FixtureRequest) -> None:
    """Each test's monitoring runs see only the predictions it sends, whichever tests ran before: whatever an
    earlier test left in the log unclaimed is claimed here (the cursor moves past it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CREDIT_RISK_HOME", str(live["home"]))
        window.claim(f"before-{request.node.name}")


def logged(gateway: str) -> float:
    text = httpx.get(f"{gateway}/gateway/metrics", timeout=10).text
    line = next(line for line in text.splitlines() if line.startswith("credit_risk_prediction_log_records "))
    return float(line.split()[1])


def replay(live: dict, rows: list[dict]) -> None:
    """Send rows through the gateway and wait until the log has written them."""
    before = logged(live["gateway"])
    sent = traffic.replay(live["gateway"], rows, rate=400)
    assert sent["failed"] == 0, sent["failures"]
    wait_for(lambda: logged(live["gateway"]) >= before + len(rows), timeout=10, what="the log writer")


def monitor(live: dict, run_id: str, **params) -> dict:
    """One monitoring run in this process (what the DAG's analyze task runs)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CREDIT_RISK_HOME", str(live["home"]))
        from live_monitoring import monitor as live_monitor

        return live_monitor.run(run_id, params)


def verdict(record: dict) -> str:
    """The outcome line without its performance part: every prediction here has an application id and none an
    outcome, so the line ends with CBPE's estimate for the serving version."""
    line, _, performance = record["outcome"].partition("; ")
    assert re.fullmatch(rf"estimated auc=0\.\d{{3}} \(version {record['version']}\)", performance), record["outcome"]
    return line


def test_concurrent_requests_give_one_record_each_with_unique_ids(live: dict) -> None:
    gateway, rows = live["gateway"], live["rows"][:200]
    before = logged(gateway)

    def send(i: int) -> list[dict]:
        instance = {**rows[i], **({"application_id": f"loan-{i}"} if i % 2 else {})}
        body = json.dumps({"instances": client.instances([instance])})  # NaN for a missing value, as TF Serving takes
        answer = httpx.post(f"{gateway}/v1/models/{config.MODEL_NAME}:predict", content=body, timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()["predictions"]

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = [p for predictions in pool.map(send, range(len(rows))) for p in predictions]
    wait_for(lambda: logged(gateway) >= before + len(rows), timeout=10, what="the log writer")
    record = monitor(live, "concurrent", min_predictions=1000)
    frame, _ = logged_predictions.read(record["window"])
    assert len(frame) == len(rows) == frame["request_id"].nunique() == frame["application_id"].nunique()
    given = {f"loan-{i}" for i in range(1, len(rows), 2)}
    assert given <= set(frame["application_id"]) and given <= {a["application_id"] for a in answers}
    by_id = {a["application_id"]: a["probability"] for a in answers}
    assert all(abs(by_id[a] - p) < 1e-6 for a, p in zip(frame["application_id"], frame["probability"], strict=True))
    assert set(frame["version"]) == {live["version"]}
    assert verdict(record) == f"live: too few predictions ({len(rows)} < 1000)"


def test_held_out_real_rows_read_as_no_drift(live: dict) -> None:
    replay(live, live["rows"][:REPLAY])
    record = monitor(live, "held-out")
    assert verdict(record) == f"live: no drift ({REPLAY} predictions, version {live['version']})", record["result"]
    assert Path(record["report"]).is_file()


@pytest.mark.parametrize(
    ("shift", "feature"), [("loan_int_rate=1.4", "loan_int_rate"), ("loan_intent:VENTURE=3", "loan_intent")]
)
def test_a_shifted_feature_is_named_exactly(live: dict, shift: str, feature: str) -> None:
    start = REPLAY * (2 if feature == "loan_int_rate" else 3)
    replay(live, traffic.shift(live["rows"][start : start + REPLAY], shift))
    record = monitor(live, f"shifted-{feature}")
    assert record["verdict"] == "drift"
    assert [name for name in record["drifted"] if name != "score"] == [feature], record["result"]["features"]
    assert record["outcome"].startswith(f"live drift: {feature}")
    assert verdict(record).endswith(f"({REPLAY} predictions, version {live['version']})")


def test_a_small_window_gives_no_verdict_and_a_rerun_counts_nothing_twice(live: dict) -> None:
    replay(live, live["rows"][4 * REPLAY : 4 * REPLAY + 60])
    first = monitor(live, "small")
    assert verdict(first) == "live: too few predictions (60 < 200)"
    again = monitor(live, "small")
    assert again["outcome"] == first["outcome"] and again["window"] == first["window"]
    assert verdict(monitor(live, "after-small")) == "live: too few predictions (0 < 200)"
    rerun = monitor(live, "small")  # an older run again, after a newer one: its own window, not the newest
    assert rerun["outcome"] == first["outcome"] and rerun["window"] == first["window"]


def test_the_dag_alerts_publishes_and_asks_for_retraining(live: dict, tmp_path: Path) -> None:
    home = live["home"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CREDIT_RISK_HOME", str(home))
        from tfx_modules.data_gate import intake

        newer = dataset.write_canonical(
            real_rows().sample(300, random_state=9), config.settings().incoming_dir / "n.csv"
        )
        intake.intake("live-test-newer", newer.name, None)
    replay(live, traffic.shift(live["rows"][5 * REPLAY : 6 * REPLAY], "loan_int_rate=1.4"))
    run = monitor_dag_run(home, CREDIT_RISK_LIVE_DRIFT_RETRAIN="true")
    last = run.lines[-1]
    assert last.startswith("live drift: loan_int_rate") and last.endswith(f"version {live['version']})")
    assert [s for s in run.subjects if "live drift" in s] == [f"[credit-risk] {last.split(' (')[0]}"]
    assert any("loan_int_rate: jensen_shannon" in text for text in run.slack)
    gauges = run.gauges
    assert gauges["credit_risk.live.verdict"] == 1 and gauges["credit_risk.live.predictions"] == REPLAY
    feature = "jensen_shannon.loan_int_rate"
    assert gauges[f"credit_risk.live.distance.{feature}"] > gauges[f"credit_risk.live.threshold.{feature}"]
    assert any("loan_int_rate" in e.get("drifted", []) for e in run.asset_extras)


def test_kill_9_of_the_gateway_loses_at_most_a_second_and_no_segment(live: dict, tmp_path: Path) -> None:
    folder = tmp_path / "predictions"
    command = [sys.executable, "-m", "serving.gateway", "--port", "0", "--upstream", live["server"]]
    gateway_proc = subprocess.Popen(
        [*command, "--prediction-log", str(folder)], env=ml_env(tmp_path), stdout=subprocess.PIPE, text=True
    )
    url = process.announced_url(next(line for line in gateway_proc.stdout if process.announced_url(line)))
    answered: list[tuple[float, str]] = []
    stop = threading.Event()
    body = json.dumps({"instances": client.instances(live["rows"][:1])})

    def load() -> None:
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                try:
                    answer = http.post(f"{url}/v1/models/{config.MODEL_NAME}:predict", content=body)
                except httpx.HTTPError:
                    return
                answered.append((time.monotonic(), answer.json()["predictions"][0]["application_id"]))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    # answers for over a second and a half: some of them older than the second the kill may cost
    wait_for(lambda: len(answered) > 100 and answered[0][0] < time.monotonic() - 1.5, 30, "answers", interval=0.05)
    gateway_proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    gateway_proc.wait(timeout=10)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CREDIT_RISK_HOME", str(tmp_path))
        frame, warnings = logged_predictions.read(window.claim("after-kill"))
    logged_ids = set(frame["application_id"])
    before = [app_id for at, app_id in answered if at < killed - 1.0]
    assert len(answered) > 100 and before
    assert set(before) <= logged_ids, f"{len(set(before) - logged_ids)} records answered > 1 s before the kill lost"
    assert logged_ids <= {app_id for _, app_id in answered}
    assert all("not prediction records" not in w for w in warnings)
    assert segments(folder)
