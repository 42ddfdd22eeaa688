"""The whole local stack, end to end (issue 5): the StatsD bridge, Prometheus and Alertmanager, the model server and
Airflow (its four components, as `make up` runs them), all on free ports under a fresh CREDIT_RISK_HOME, with an
SMTP and a Slack-style sink.

A generated batch is triggered through Airflow's REST API and trains, pushes and deploys a model; the model server
serves it; the DAG's and the real scheduler's metrics reach Prometheus; traffic through the gateway is judged by a
live-monitoring run (as `make run` ends); every panel of the three dashboards returns data (after predictions and a
second, gate-only run on a shifted batch, which measures drift); then the model server is stopped and the
ServingDown alert, with its production rule, reaches the email and the webhook sink.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common import config
from data.generate import generate
from serving import client, local_service, traffic
from testing import airflow_sandbox
from testing.harness import (
    airflow_settings,
    alert_sinks,
    assert_panels_return_data,
    dag_alert_connections,
    dashboard,
    free_port,
    get_json,
    query,
    running_stack,
    wait_for,
)
from tfx_modules.data_gate import dataset

pytestmark = pytest.mark.slow


def _script(name: str):
    """A module of scripts/ (not a package: run there as programs)."""
    spec = importlib.util.spec_from_file_location(name, config.PROJECT_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


airflow_local = _script("airflow_local")
DAG = airflow_local.DAG_ID


def _leftovers(home: Path, airflow_session: int | None) -> list[int]:
    """Processes of the stack still running: in Airflow's session (its workers overwrite their environment with their
    process title), or with `home` in their environment (monitoring, model server)."""
    marker = f"CREDIT_RISK_HOME={home}".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            session = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[3])
            mine = session == airflow_session or marker in (proc / "environ").read_bytes().split(b"\0")
            if mine and int(proc.name) != os.getpid():
                found.append(int(proc.name))
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Monitoring, model server and Airflow on free ports, alerts routed to the sinks; everything stopped after."""
    home = tmp_path_factory.mktemp("e2e_home")
    serving_url = f"http://127.0.0.1:{free_port()}"
    with alert_sinks() as (slack, mail, smtp_port), contextlib.ExitStack() as teardown:
        env = {
            **airflow_settings(home),
            # Alertmanager's receivers (monitoring/README.md) and the DAG's own alert connections (dags/README.md)
            "ALERT_SMTP_SMARTHOST": f"127.0.0.1:{smtp_port}",
            "ALERT_SLACK_WEBHOOK_URL": slack.url,
            "ALERT_GROUP_WAIT": "1s",
            "ALERT_GROUP_INTERVAL": "1s",
            **dag_alert_connections(smtp_port, slack.url),
        }
        urls = teardown.enter_context(running_stack(home, serving_url, env))
        try:
            teardown.callback(local_service.stop)
            local_service.start()
            teardown.callback(airflow_local.stop)
            started = time.monotonic()
            airflow_local.start(timeout=240)
            print(f"Airflow healthy after {time.monotonic() - started:.0f}s")
            yield {**urls, "home": home, "serving": serving_url, "slack": slack, "mail": mail}
        finally:
            airflow_session = airflow_local.running()  # before stop() removes its pid file
            teardown.close()  # Airflow, then the model server, then monitoring
            left = _leftovers(home, airflow_session)
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            assert not left, f"processes left running after the stack stopped: {left}"


def _batch(folder: Path, name: str, rows: int, seed: int, **drift) -> Path:
    return dataset.write_canonical(generate(rows, seed=seed, **drift), folder / name)


def _line(lines: list[str], part: str) -> str | None:
    return next((line for line in lines if part in line), None)


def _number(prometheus: str, promql: str) -> float | None:
    result = query(prometheus, promql)
    return float(result[0]["value"][1]) if result else None


def test_triggered_run_serves_monitors_and_alerts(stack: dict, tmp_path: Path):
    prometheus = stack["prometheus"]
    clock = time.monotonic()

    progress: list[str] = []
    outcome = airflow_local.trigger(_batch(tmp_path, "batch-1.csv", 3000, seed=11), {}, 600, progress.append)
    print(f"first run (train, push, deploy): {time.monotonic() - clock:.0f}s: {outcome}")
    match = re.fullmatch(r"retrained version=(\d+)", outcome)
    assert match, f"the first run should train and deploy, its outcome: {outcome}"
    version = match.group(1)
    # `make run` follows the run: its page in the UI, then each task as it starts and ends, with the elapsed time.
    print("\n".join(progress))
    first = re.fullmatch(r"run (\S+): (\S+)", progress[0])  # run ids hold colons: the URL follows ": "
    assert first, progress[0]
    assert first[2] == airflow_local.api().run_url(airflow_local.DAG_ID, first[1])
    assert re.fullmatch(
        r" {2}\[ *\d+s\] retrain\.Trainer: success after \d+s", _line(progress, "retrain.Trainer: success")
    )
    assert _line(progress, "retrain.Trainer: running") and progress[-1].endswith("] run success")
    assert _line(progress, "deploy: success") and _line(progress, "no_training: skipped")

    status = get_json(f"{stack['serving']}/v1/models/{config.MODEL_NAME}")["model_version_status"]
    assert [(s["version"], s["state"]) for s in status] == [(version, "AVAILABLE")]
    for seed in range(4):  # predictions spread over scrapes, so rate() sees them
        predictions = client.predict(stack["serving"], client.generated_rows(8, seed=seed))
        assert len(predictions) == 8 and all(0 <= p["probability"] <= 1 for p in predictions)
        time.sleep(1)

    # The DAG's metrics and those only a running scheduler sends (dagrun duration, heartbeats), through Prometheus.
    expected = {
        'credit_risk_drift_gate_decisions{decision="retrain"}': 1,
        "credit_risk_model_version": int(version),
        f'airflow_dagrun_duration_seconds_count{{dag_id="{DAG}",state="success"}}': 1,
        # Airflow 3 writes a task group's dot as `__` in the StatsD names (retrain.Trainer -> retrain__Trainer)
        f'airflow_task_instance_finished{{dag_id="{DAG}",task_id="retrain__Trainer",state="success"}}': 1,
        f'airflow_task_instance_finished{{dag_id="{DAG}",task_id="retrain__deploy",state="success"}}': 1,
    }
    for promql, value in expected.items():
        wait_for(lambda p=promql, v=value: _number(prometheus, p) == v, 60, f"{promql} == {value} in Prometheus")
    heartbeats = 'increase(airflow_component_heartbeat{component="scheduler"}[1m]) > 0'
    wait_for(lambda: query(prometheus, heartbeats), 30, "the scheduler's heartbeats in Prometheus")
    assert_panels_return_data(prometheus, dashboard("serving"))

    # `make run` ends so: generated applications through the gateway, which logs each prediction, then one run of the
    # live-monitoring DAG through the scheduler (its analysis on the warm ML worker) over them, the 32 above and the
    # deploy step's smoke prediction through the gateway (every prediction the gateway answers is logged).
    rows = client.generated_rows(300, seed=21)
    live = airflow_local.trigger(
        None,
        {},
        600,
        dag_id=airflow_local.MONITOR_DAG_ID,
        before_run=lambda: traffic.replay(stack["serving"], rows, rate=100),
    )
    print(f"live-monitoring run: {live}")
    # The traffic comes from the generator the model was trained on: any drift verdict is a false alarm.
    judged = rf"live: no drift \(333 predictions, version {version}\)"
    assert re.fullmatch(rf"{judged}; estimated auc=0\.\d+ \(version {version}\)", live), live  # no outcomes yet
    # outcomes arrive months after the predictions: the realized panels fill then (tests/test_monitoring_stack.py)
    assert_panels_return_data(prometheus, dashboard("live"), unless="credit_risk_realized_performance")

    # A run that fails says why: each failed task with the error it logged, read through the REST API.
    with pytest.raises(RuntimeError) as failed:
        airflow_local.trigger(None, {"batch": "no-such-batch.csv"}, 300)
    assert re.fullmatch(
        r"run \S+ failed \(intake: \S*MLCallError: FileNotFoundError: batch 'no-such-batch\.csv' is neither in \S+ "
        r"nor among the batches already processed\); see its task logs at http://\S+",
        str(failed.value),
    ), failed.value

    # Serving goes down; while ServingDown's `for: 1m` runs, a gate-only run on a shifted batch measures drift.
    assert local_service.stop()
    down = time.monotonic()
    shifted = _batch(tmp_path, "batch-2.csv", 1000, seed=12, shift={"loan_int_rate": 1.4})
    # `make run-dag` beside the running stack hands the run to its Airflow (`airflow dags test` would collide with it)
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    result = airflow_sandbox.run_dag_process(env, shifted, {"gate_only": True}, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Airflow is up at " in result.stdout and "TaskAlreadyRunningError" not in result.stdout + result.stderr
    outcome = result.stdout.strip().splitlines()[-1]
    print(f"second run (gate only, through make run-dag): {time.monotonic() - down:.0f}s: {outcome}")
    assert outcome.startswith("gate only: would retrain (drift in batch-2.csv"), outcome
    wait_for(lambda: query(prometheus, 'credit_risk_drift{feature="loan_int_rate"}'), 30, "the drift gauges")
    assert_panels_return_data(prometheus, dashboard("retraining"))

    slack, mail = stack["slack"], stack["mail"]
    for sink, texts in (("the webhook sink", slack.texts), ("the SMTP sink", lambda: mail.messages)):
        wait_for(lambda t=texts: any("ServingDown" in m for m in t()), 120, f"the ServingDown alert on {sink}")
        assert any(f"new model version {version}" in m for m in texts()), f"the DAG's new-model alert on {sink}"
    print(f"ServingDown reached both sinks {time.monotonic() - down:.0f}s after the model server stopped")
    alerts = get_json(f"{stack['alertmanager']}/api/v2/alerts")
    assert "ServingDown" in {a["labels"]["alertname"] for a in alerts}
