"""End-to-end runs of the retraining DAG with `airflow dags test` (through `scripts/airflow_local.py run-dag`).

One scenario, `test_one_home_through_its_runs`, in one state directory, step by step (a failure names its step):
the first batch trains and deploys a model (its task logs show no error, and it leaves nothing in TMPDIR); a
resample is skipped; shifted numeric and category batches drift (gate-only run: the retrain decision and alerts,
without a second training); corrupt batches and a duplicate are quarantined or dropped with nothing pushed; a
failing task alerts; a 0-day retention purges raw data no serving model needs, and a purged batch arriving again
is taken in anew; a drift-threshold param and force_retrain flip the gate's decision; a lone duplicate trains
nothing; a model under the AUC floor is not blessed; and the metrics these runs sent answer every dashboard panel
and alert rule. A deploy that cannot place its version rolls back and fails the run (a test of its own, on a stack
of its own, serving the session's model). Alerts land in a local SMTP server
(aiosmtpd) and a local Slack webhook sink; StatsD in a local UDP socket; the deploy step talks to the local serving
stand-in.
"""

from __future__ import annotations

import contextlib
import email
import html
import json
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from email import policy
from pathlib import Path

import httpx
import pytest
import yaml

from common import config, permissions
from data.generate import generate
from monitoring.grafana_dashboards import DASHBOARDS
from scripts import airflow_local
from serving import client
from testing import airflow_sandbox
from testing.harness import (
    MailSink,
    SlackSink,
    alert_sinks,
    dag_alert_connections,
    dashboard,
    get_json,
    metric_selectors,
    panel_queries,
    query,
    run_steps,
    running_stack,
    send_statsd,
    wait_for,
)
from tests.conftest import ml_env
from tfx_modules.data_gate import dataset

pytestmark = pytest.mark.slow


class Inbox:
    """What the sinks received: mail (subject, body) pairs, Slack texts, StatsD lines."""

    def __init__(self, mail: MailSink, slack: SlackSink) -> None:
        self._mail, self._slack = mail, slack
        self.statsd: list[str] = []

    @property
    def mails(self) -> list[tuple[str, str]]:
        messages = (email.message_from_string(m, policy=policy.default) for m in self._mail.messages)
        return [(str(m["subject"]), html.unescape(m.get_body(("html", "plain")).get_content())) for m in messages]

    @property
    def slack(self) -> list[str]:
        return [body["text"] for body in self._slack.received]

    def mark(self) -> tuple[int, int, int]:
        return len(self._mail.messages), len(self._slack.received), len(self.statsd)

    def since(self, mark: tuple[int, int, int]) -> tuple[list[tuple[str, str]], list[str], list[str]]:
        return self.mails[mark[0] :], self.slack[mark[1] :], self.statsd[mark[2] :]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict, Inbox]]:
    """A state directory, the sinks, the serving stand-in, and the environment run-dag needs to use them (with a
    TMPDIR of its own, so what a run leaves there is measured apart from other users of /tmp)."""
    with dag_stack(tmp_path_factory, "dag_runs") as made:
        yield made


@contextlib.contextmanager
def dag_stack(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[tuple[Path, dict, Inbox]]:
    home = tmp_path_factory.mktemp(name)
    tmp = tmp_path_factory.mktemp(f"{name}_tmp")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    with alert_sinks() as (slack, mail, smtp_port), airflow_sandbox.sandbox(home) as sandbox:
        inbox = Inbox(mail, slack)

        def receive() -> None:
            while True:
                try:
                    inbox.statsd.extend(udp.recv(65536).decode().splitlines())
                except OSError:
                    return

        threading.Thread(target=receive, daemon=True).start()
        env = {
            **sandbox,
            "CREDIT_RISK_STATSD_HOST": "127.0.0.1",
            "CREDIT_RISK_STATSD_PORT": str(udp.getsockname()[1]),
            "TMPDIR": str(tmp),
            **dag_alert_connections(smtp_port, slack.url),
        }
        yield home, env, inbox
    udp.close()


def run_dag(stack, batch_file: Path | None, env: dict[str, str] | None = None, **params) -> tuple[int, str]:
    """`run-dag [batch_file] --conf params` (with `env` over the stack's); returns the exit code and the last line."""
    code, last, _ = run_dag_logged(stack, batch_file, env, **params)
    return code, last


def run_dag_logged(stack, batch_file: Path | None, env: dict[str, str] | None = None, **params) -> tuple[int, str, str]:
    """`run-dag`: the exit code, the last line, and the whole output (`dags test` prints every task's log)."""
    _, stack_env, _ = stack
    environment = {"PATH": "/usr/bin:/bin", **stack_env, **(env or {})}
    result = airflow_sandbox.run_dag_process(environment, batch_file, params, timeout=900)
    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr[-3000:]
    return result.returncode, lines[-1], result.stdout + result.stderr


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def versions(home: Path, kind: str = "models") -> list[str]:
    folder = home / kind / config.MODEL_NAME
    return sorted(p.name for p in folder.iterdir() if p.name.isdigit()) if folder.exists() else []


def staged(home: Path, name: str) -> Path:
    """Where the test keeps its batches before delivering them: beside the state directory, not in it."""
    return home.with_name(f"{home.name}-batches") / name


def write(home: Path, name: str, df) -> Path:
    return dataset.write_canonical(df, staged(home, name))


def gauges(lines: list[str]) -> dict[str, float]:
    return {line.split(":")[0]: float(line.split(":")[1].split("|")[0]) for line in lines if line.endswith("|g")}


def counters(lines: list[str]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for line in (line for line in lines if line.endswith("|c")):
        name, value = line.split(":")[0], float(line.split(":")[1].split("|")[0])
        totals[name] = totals.get(name, 0.0) + value
    return totals


def first_batch_trains_deploys_and_announces(stack, runs: dict) -> None:
    """The first batch's run, whose serving model every later step needs (`runs["served"]`: its exit code, last
    line, output and what the sinks received)."""
    home, env, inbox = stack
    mark = inbox.mark()
    code, last, output = run_dag_logged(stack, write(home, "first.csv", generate(3000, seed=21)))
    runs["served"] = code, last, output, inbox.since(mark)
    mails, slack, stats = runs["served"][3]

    assert code == 0, last
    assert files_in(Path(env["TMPDIR"])) == []  # no package build, no autograph file, no call's TMPDIR left
    assert not re.search(r"\[error\s*\]|ModuleNotFoundError|Traceback", output), "a successful run logged an error"
    assert "tree model(s) of [" in output  # the Trainer's own output reaches its task's log
    assert last.startswith("retrained version=")
    version = last.removeprefix("retrained version=")
    assert versions(home) == [version] and versions(home, "serving") == [version]
    lineage = json.loads((home / "state" / "lineage.json").read_text())["models"]
    assert [m["version"] for m in lineage] == [int(version)] and lineage[0]["rows"] == 3000
    assert [s for s, _ in mails] == [f"[credit-risk] new model version {version}"]
    assert "auc=" in mails[0][1] and "deploy: deployed" in mails[0][1]
    card = Path(re.search(r"model card: (\S+?\.html)", mails[0][1])[1])
    assert card == home / "reports" / f"card-{version}.html" and card.is_file()
    assert json.loads(card.with_suffix(".json").read_text())["deployment"]["went_live"]  # written after the deploy
    assert len(slack) == 1 and slack[0].startswith(f"new model version {version}") and "accuracy=" in slack[0]
    sent = gauges(stats)
    assert sent["credit_risk.model.version"] == int(version) and 0.5 < sent["credit_risk.model.auc"] <= 1
    assert counters(stats)["credit_risk.drift_gate.retrain"] == 1
    # Everything the run wrote (batches, pipeline, ML Metadata, models, reports, Airflow's home, logs) is private.
    assert permissions.exposed(home) == []


def resampled_batch_is_skipped(stack, runs: dict) -> None:
    home, _, inbox = stack
    before, mark = versions(home), inbox.mark()

    code, last = run_dag(stack, write(home, "resample.csv", generate(1500, seed=22)))

    assert (code, last) == (0, "skipped: no drift")
    assert versions(home) == before
    mails, slack, stats = inbox.since(mark)
    assert mails == [] and slack == []
    drift = {k: v for k, v in gauges(stats).items() if k.startswith("credit_risk.drift.")}
    assert len(drift) == 11 and max(drift.values()) < 0.1
    assert counters(stats)["credit_risk.drift_gate.skip"] == 1


def shifted_numeric_and_category_batches_drift_and_alert(stack, runs: dict) -> None:
    home, _, inbox = stack
    before, mark = versions(home), inbox.mark()
    incoming = home / "incoming"
    write(home, "richer.csv", generate(1500, seed=23, shift={"loan_int_rate": 1.4})).rename(incoming / "richer.csv")
    mix = {"loan_intent": {"VENTURE": 0.6}}
    write(home, "ventures.csv", generate(1500, seed=24, category_mix=mix)).rename(incoming / "ventures.csv")

    code, last = run_dag(stack, None, gate_only=True)

    assert code == 0
    assert last == "gate only: would retrain (drift in richer.csv (loan_int_rate), ventures.csv (loan_intent))"
    assert versions(home) == before
    mails, slack, stats = inbox.since(mark)
    assert [s for s, _ in mails] == ["[credit-risk] drift detected"]
    for text in (mails[0][1], slack[0]):
        assert "richer.csv: loan_int_rate jensen_shannon" in text and "> threshold 0.1000" in text
        assert "ventures.csv: loan_intent l_infinity" in text and "> threshold 0.0500" in text
        report = text.split("report: ")[1].split()[0].removesuffix("</pre>")
        assert Path(report).is_file() and "loan_intent" in Path(report).read_text()
    assert gauges(stats)["credit_risk.drift.loan_int_rate"] > 0.1
    assert counters(stats)["credit_risk.drift_gate.retrain"] == 1


CORRUPT = {
    "no_column.csv": lambda: generate(200, seed=31).drop(columns=["loan_amnt"]).to_csv(index=False).encode(),
    "text.csv": lambda: generate(200, seed=32).assign(person_income="lots").to_csv(index=False).encode(),
    "unseen.csv": lambda: generate(200, seed=33, category_mix={"loan_grade": {"Z": 0.2}}).to_csv(index=False).encode(),
    "empty.csv": lambda: b"",
    "noise.csv": lambda: random.Random(0).randbytes(3000),
}
REASONS = {
    "no_column.csv": "missing columns: loan_amnt",
    "text.csv": "text in a numeric column",
    "unseen.csv": "loan_grade",
    "empty.csv": "empty file",
    "noise.csv": "binary content, not a CSV text file",
}


def corrupt_batches_are_quarantined_and_nothing_is_pushed(stack, runs: dict) -> None:
    home, _, inbox = stack
    before, serving, mark = versions(home), versions(home, "serving"), inbox.mark()
    incoming = home / "incoming"
    for name, content in CORRUPT.items():
        (incoming / name).write_bytes(content())
    (incoming / "first_again.csv").write_bytes(staged(home, "first.csv").read_bytes())

    code, last = run_dag(stack, None)

    assert code == 0 and last.startswith("quarantined: ")
    assert (versions(home), versions(home, "serving")) == (before, serving)
    assert list(incoming.iterdir()) == []
    ledger = json.loads((home / "state" / "batches.json").read_text())
    by_name = {e["name"]: e for e in ledger.values()}
    assert "first_again.csv" in by_name["first.csv"]["duplicates"]
    mails, slack, stats = inbox.since(mark)
    subjects = sorted(s for s, _ in mails)
    assert subjects == sorted(f"[credit-risk] batch {name} quarantined" for name in CORRUPT)
    for name, reason in REASONS.items():
        entry = by_name[name]
        assert entry["status"] == "quarantined" and reason in entry["reason"] and entry["reason"] in last
        assert Path(entry["path"]).is_file()
        assert json.loads(Path(entry["path"] + ".report.json").read_text())["reason"] == entry["reason"]
        assert any(text.startswith(f"batch {name} quarantined") and reason in text for text in slack)
    assert counters(stats)["credit_risk.drift_gate.quarantine"] == len(CORRUPT)


def failing_task_alerts(stack, runs: dict) -> None:
    """A run whose first task fails (the batch it names never arrived); `runs["failed"]`: exit code, last line,
    what the sinks got."""
    inbox = stack[2]
    mark = inbox.mark()
    code, last = run_dag(stack, None, batch="never_arrived.csv")
    runs["failed"] = code, last, inbox.since(mark)
    mails, slack, _ = runs["failed"][2]

    assert code == 1 and last.startswith("failed:")
    assert [s for s, _ in mails] == ["[credit-risk] task credit_risk_retraining.intake failed"]
    assert "never_arrived.csv" in mails[0][1] and "never_arrived.csv" in slack[0]


def retention_run_of(stack) -> dict:
    """Raw data a 0-day retention removes (a resampled batch accepted, a corrupt one quarantined, in a run of their
    own), then the run with `CREDIT_RISK_RETENTION_DAYS=0`: its outcome and the ledger before and after."""
    home = stack[0]
    incoming = home / "incoming"
    shutil.copy(write(home, "old_resample.csv", generate(1500, seed=25)), incoming)  # staged copy kept for later
    (incoming / "old_noise.csv").write_bytes(random.Random(1).randbytes(3000))
    assert run_dag(stack, None) == (0, "skipped: no drift")  # the outcome of the accepted one
    before = read_ledger(home)
    statuses = {e["name"]: e["status"] for e in before.values()}
    assert (statuses["old_resample.csv"], statuses["old_noise.csv"]) == ("accepted", "quarantined")
    code, last = run_dag(stack, None, env={"CREDIT_RISK_RETENTION_DAYS": "0"})
    examples = [p for p in (home / "pipeline").glob("*/*examples/*") if p.is_dir()]
    return {"code": code, "last": last, "before": before, "after": read_ledger(home), "examples": examples}


def retention_removes_raw_data_no_model_in_use_needs(stack, runs: dict) -> None:
    """With a retention of 0 days, the run's last step removes every batch but the serving model's, and no pipeline
    data of that model; the ledger says what went."""
    home, _, _ = stack
    retention = runs["retention"] = retention_run_of(stack)
    before, after = retention["before"], retention["after"]

    # none is within a 0-day retention
    assert (retention["code"], retention["last"]) == (0, "skipped: no accepted data to train on")
    (model,) = json.loads((home / "state" / "lineage.json").read_text())["models"]
    for sha, entry in after.items():
        if sha in model["batches"]:
            assert entry["status"] == "accepted" and Path(entry["path"]).is_file()
        elif before[sha]["status"] in ("accepted", "quarantined"):
            assert entry["status"] == "purged" and entry["purged"]["was"] == before[sha]["status"]
            assert not Path(entry["path"]).exists()
    assert {e["name"] for e in after.values() if e["status"] == "purged"} >= {"old_resample.csv", "old_noise.csv"}
    assert versions(home) == [str(model["version"])]  # models are no raw data: kept
    assert len(retention["examples"]) == 1  # the serving model's CsvExampleGen output (Transform writes none)


def a_purged_batch_arriving_again_is_taken_in_anew(stack, runs: dict) -> None:
    home, _, _ = stack
    assert any(e["name"] == "old_resample.csv" and e["status"] == "purged" for e in runs["retention"]["after"].values())

    code, last = run_dag(stack, staged(home, "old_resample.csv"))

    assert (code, last) == (0, "skipped: no drift")  # accepted again (not a duplicate), drift measured
    (entry,) = (e for e in read_ledger(home).values() if e["name"] == "old_resample.csv")
    assert entry["status"] == "accepted" and Path(entry["path"]).is_file() and "purged" in entry


def read_ledger(home: Path) -> dict[str, dict]:
    return json.loads((home / "state" / "batches.json").read_text())


LOW_THRESHOLD = 0.0001  # a resample's drift on person_income is above it, and below the default threshold


def a_drift_threshold_param_flips_the_decision(stack, runs: dict) -> None:
    """A gate-only run on a resampled batch (no drift at the default thresholds) with the `drift_thresholds` param
    lowering person_income's threshold; `runs["low_threshold"]`: exit code, last line, what the sinks got."""
    home, _, inbox = stack
    mark = inbox.mark()
    batch = write(home, "low_threshold.csv", generate(1500, seed=26))
    code, last = run_dag(stack, batch, gate_only=True, drift_thresholds={"person_income": LOW_THRESHOLD})
    runs["low_threshold"] = code, last, inbox.since(mark)
    mails, slack, stats = runs["low_threshold"][2]

    assert (code, last) == (0, "gate only: would retrain (drift in low_threshold.csv (person_income))")
    sent = gauges(stats)
    assert sent["credit_risk.drift_threshold.person_income"] == LOW_THRESHOLD  # the param reached the comparison
    # below the default threshold: without the param this batch is skipped, as the resample test shows
    assert LOW_THRESHOLD < sent["credit_risk.drift.person_income"] < config.DEFAULT_NUMERIC_DRIFT
    assert sent["credit_risk.drift_threshold.loan_amnt"] == config.DEFAULT_NUMERIC_DRIFT  # others keep theirs
    assert counters(stats)["credit_risk.drift_gate.retrain"] == 1
    assert [s for s, _ in mails] == ["[credit-risk] drift detected"]
    assert "low_threshold.csv: person_income jensen_shannon" in slack[0] and "> threshold 0.0001" in slack[0]


def force_retrain_without_drift_decides_to_retrain(stack, runs: dict) -> None:
    home, _, inbox = stack
    before, mark = versions(home), inbox.mark()

    code, last = run_dag(stack, None, gate_only=True, force_retrain=True)  # no batch at all, so no drift

    assert (code, last) == (0, "gate only: would retrain (forced by the run's params)")
    assert versions(home) == before
    mails, slack, stats = inbox.since(mark)
    assert mails == [] and slack == []  # no drift, nothing quarantined: nothing to alert
    assert counters(stats)["credit_risk.drift_gate.retrain"] == 1
    assert not any(line.startswith("credit_risk.drift.") for line in stats)


def a_run_where_only_a_duplicate_arrives_trains_nothing(stack, runs: dict) -> None:
    home, _, inbox = stack
    before, serving, mark = versions(home), versions(home, "serving"), inbox.mark()
    resent = staged(home, "first_resent.csv")
    resent.write_bytes(staged(home, "first.csv").read_bytes())

    code, last = run_dag(stack, resent)

    # batches accepted since the first model (the resamples, the low-threshold one): the accepted data is not the
    # serving model's, and nothing new arrived
    assert (code, last) == (0, "skipped: no new batch")
    assert (versions(home), versions(home, "serving")) == (before, serving)
    assert list((home / "incoming").iterdir()) == []
    (first,) = (e for e in read_ledger(home).values() if e["name"] == "first.csv")
    assert "first_resent.csv" in first["duplicates"]
    assert not any(e["name"] == "first_resent.csv" for e in read_ledger(home).values())
    mails, slack, stats = inbox.since(mark)
    assert mails == [] and slack == []
    assert counters(stats)["credit_risk.drift_gate.skip"] == 1 and "credit_risk.drift_gate.retrain" not in counters(
        stats
    )


def a_model_below_the_floor_is_not_blessed_alerts_and_serving_is_unchanged(stack, runs: dict) -> None:
    """A forced retraining with an impossible AUC floor: the not-blessed branch, its alert, nothing pushed."""
    home, _, inbox = stack
    before, serving, mark = versions(home), versions(home, "serving"), inbox.mark()
    batch = write(home, "unblessed.csv", generate(1500, seed=27))

    code, last = run_dag(stack, batch, env={"CREDIT_RISK_MIN_AUC": "0.999"}, force_retrain=True)

    assert code == 0 and last.startswith("not blessed: auc on overall"), last
    assert (versions(home), versions(home, "serving")) == (before, serving)
    mails, slack, stats = inbox.since(mark)
    assert [s for s, _ in mails] == ["[credit-risk] new model not blessed"]
    reason = last.removeprefix("not blessed: ")
    for text in (mails[0][1], slack[0]):
        assert f"reason: {reason}" in text and "serving unchanged" in text and re.search(r"metrics: .*auc=0\.\d+", text)
    assert len(slack) == 1 and slack[0].startswith("new model not blessed")
    assert not any(line.startswith("credit_risk.model.") for line in stats)  # no new model's gauges


@pytest.fixture(scope="module")
def rollback_stack(tmp_path_factory: pytest.TempPathFactory, trained_model: Path) -> Iterator[tuple[Path, dict, Inbox]]:
    """A stack of its own (its lineage and models stay apart from the other tests') serving the session's trained
    model through the deploy CLI, as a DAG run would have left it."""
    with dag_stack(tmp_path_factory, "dag_rollback") as made:
        home, env, _ = made
        (source,) = trained_model.iterdir()
        shutil.copytree(source, home / "models" / config.MODEL_NAME / source.name)
        command = [sys.executable, "-m", "serving.deploy", "deploy", "--version", source.name]
        deployed = subprocess.run(command, env=ml_env(home, **env), capture_output=True, text=True, timeout=300)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr[-3000:]
        yield made


def test_a_deploy_that_fails_is_rolled_back_fails_the_run_and_alerts(rollback_stack) -> None:
    """A forced retraining whose blessed model cannot be placed (the serving folder refuses writes, even root's):
    the deploy task rolls back, fails after its retry, alerts, and the old version keeps answering."""
    home, env, inbox = rollback_stack
    serving_dir = home / "serving" / config.MODEL_NAME
    (live,) = versions(home, "serving")
    mark = inbox.mark()
    subprocess.run(["chattr", "+i", str(serving_dir)], check=True)
    try:
        code, last = run_dag(
            rollback_stack, write(home, "undeployable.csv", generate(1500, seed=28)), force_retrain=True
        )
    finally:
        subprocess.run(["chattr", "-i", str(serving_dir)], check=True)

    assert code == 1 and last.startswith("failed:"), last
    (new,) = set(versions(home)) - {live}  # blessed and pushed, never served
    assert int(new) > int(live) and versions(home, "serving") == [live]
    assert json.loads((home / "state" / "serving.json").read_text())["live"]["version"] == int(live)
    status = client.request(f"{env['CREDIT_RISK_SERVING_URL']}/v1/models/{config.MODEL_NAME}", timeout=10)
    assert [(s["version"], s["state"]) for s in status["model_version_status"]] == [(live, "AVAILABLE")]
    mails, slack, _ = inbox.since(mark)
    assert [s for s, _ in mails] == [f"[credit-risk] task {airflow_local.DAG_ID}.retrain.deploy failed"]
    for text in (mails[0][1], slack[0]):
        assert f"deploy of version {new}: rolled_back" in text and f"rolled back to version {live}" in text
        assert "try: 2" in text  # the retry failed the same way


# Heartbeats: sent only by a running scheduler, dag-processor and triggerer, none of which `airflow dags test` starts
# (the compose stack runs them).
SCHEDULER_ONLY = {"airflow_component_heartbeat"}
# A scheduler also sends each finished run's duration (`dagrun.duration.<state>.<dag_id>`), which `dags test` does
# not: Airflow's own emitter, initialised as the scheduler initialises it, sends it for every run in the database.
EMIT_RUN_DURATIONS = """
import os, sys
sys.path.insert(0, os.environ["CREDIT_RISK_PROJECT_ROOT"])
from scripts import airflow_local
os.environ.update(airflow_local.environment())
from airflow._shared.observability.metrics import stats
from airflow.configuration import conf
from airflow.models.dagrun import DagRun
from airflow.observability.metrics import stats_utils
from airflow.utils.session import create_session
from sqlalchemy import select
legacy = conf.getboolean("metrics", "legacy_names_on")
stats.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=legacy)
with create_session() as session:
    for run in session.scalars(select(DagRun).where(DagRun.dag_id == airflow_local.DAG_ID)):
        run._emit_duration_stats_for_finished_state()
"""
# Task outcomes the runs below must show, under the task ids Airflow sends ('.' of a task group as '__').
TASK_OUTCOMES = (("retrain__Trainer", "success"), ("retrain__deploy", "success"), ("intake", "failed"))
FINISHED = 'airflow_task_instance_finished{dag_id="credit_risk_retraining",task_id="%s",state="%s"}'
ALERT_RULES = config.PROJECT_ROOT / "monitoring" / "rules" / "alerts.yml"


def scheduler_only(selector: str) -> bool:
    return selector.split("{")[0] in SCHEDULER_ONLY


def run_durations(stack) -> list[str]:
    """The packets a scheduler would have sent for the stack's finished runs (EMIT_RUN_DURATIONS)."""
    _, env, inbox = stack
    mark = inbox.mark()
    python = airflow_local.AIRFLOW.parent / "python"
    environment = {"PATH": "/usr/bin:/bin", **env, "CREDIT_RISK_PROJECT_ROOT": str(config.PROJECT_ROOT)}
    command = [str(python), "-c", EMIT_RUN_DURATIONS]
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    wait_for(lambda: "airflow.dagrun.duration." in "".join(inbox.statsd[mark[2] :]), 10, "the runs' durations")
    return inbox.statsd[mark[2] :]


def the_runs_own_metrics_answer_every_dashboard_panel_and_alert_rule(stack, runs: dict) -> None:
    """The StatsD packets real runs sent (a trained and deployed model, a drift decision, a failed run; with the
    durations a scheduler sends for them) and the model server's own metrics after real requests, through the bridge
    into Prometheus: every metric each dashboard panel and each alert rule reads exists, under the names these runs
    emit (task ids as Airflow sends them), and the drift and failed-run alerts fire. A renamed task, metric or label
    fails here; `or vector(0)` and fallback metrics do not hide a missing one, as each selector is queried alone."""
    _, env, _ = stack
    packets = [line for run in (runs["served"][3], runs["low_threshold"][2], runs["failed"][2]) for line in run[2]]
    packets += run_durations(stack)
    serving_url = env["CREDIT_RISK_SERVING_URL"]
    client.predict(serving_url, [client.example_row()])
    refused = httpx.post(f"{serving_url}/v1/models/credit_risk:predict", json={"instances": [{}]}, timeout=10)
    assert refused.status_code == 400

    monitoring_home = stack[0].with_name(f"{stack[0].name}-monitoring")
    monitoring_home.mkdir()
    with running_stack(monitoring_home, serving_url) as urls:
        # ten lines a datagram, as Airflow's client may batch them: hundreds of one-line datagrams at once overflow
        # the bridge's socket buffer
        send_statsd(urls["statsd_port"], ["\n".join(packets[i : i + 10]) for i in range(0, len(packets), 10)])
        prometheus = urls["prometheus"]

        def has_data(selector: str) -> bool:
            return bool(query(prometheus, selector))

        # The live dashboard and rules read the monitoring DAG's and the prediction log's metrics: tests of live
        # monitoring feed those (tests/test_live_*.py).
        fed = [name for name in DASHBOARDS if name != "live"]
        panels = [(f"{name} panel {title!r}", e) for name in fed for title, e in panel_queries(dashboard(name))]
        rules = [g for g in yaml.safe_load(ALERT_RULES.read_text())["groups"] if g["name"] in fed]
        alerts = [(f"alert {r['alert']}", r["expr"]) for group in rules for r in group["rules"]]

        def fed_elsewhere(selector: str) -> bool:
            """Only a running scheduler, or a rollout (the gateway's, tests/test_rollout.py), sends these."""
            return scheduler_only(selector) or selector.startswith("credit_risk_rollout")

        def gaps() -> list[str]:
            """Every task outcome, selector and panel (as Grafana runs it) that has no data yet."""
            found = [f"task {task} {state}" for task, state in TASK_OUTCOMES if not has_data(FINISHED % (task, state))]
            for where, expr in [*panels, *alerts]:
                found += [f"{where}: {s}" for s in metric_selectors(expr) if not fed_elsewhere(s) and not has_data(s)]
            for where, expr in panels:  # rules are conditions: only their selectors must have data
                if not all(fed_elsewhere(s) for s in metric_selectors(expr)) and not query(prometheus, expr):
                    found.append(f"{where} returns no data: {expr}")
            return found

        deadline = time.monotonic() + 30  # two scrapes give rate() its two samples; the rest is the machine's load
        while (missing := gaps()) and time.monotonic() < deadline:
            time.sleep(1)
        sent = sorted({line.split(":")[0] for line in packets})
        assert missing == [], "\n".join([*missing, "the runs sent:", *sent])

        def firing() -> dict[str, dict]:
            active = get_json(f"{prometheus}/api/v1/alerts")["data"]["alerts"]
            return {a["labels"]["alertname"]: a["labels"] for a in active if a["state"] == "firing"}

        wait_for(lambda: {"DagRunFailed", "DriftDetected"} <= set(firing()), 30, "the runs' alerts to fire")
        assert firing()["DagRunFailed"]["dag_id"] == "credit_risk_retraining"
        assert firing()["DriftDetected"]["feature"] == "person_income"


def test_one_home_through_its_runs(stack) -> None:
    """The runs one state directory sees, in this order, each step on what the steps before it left."""
    runs: dict = {}
    run_steps(
        [
            first_batch_trains_deploys_and_announces,
            resampled_batch_is_skipped,
            shifted_numeric_and_category_batches_drift_and_alert,
            corrupt_batches_are_quarantined_and_nothing_is_pushed,
            failing_task_alerts,
            retention_removes_raw_data_no_model_in_use_needs,
            a_purged_batch_arriving_again_is_taken_in_anew,
            a_drift_threshold_param_flips_the_decision,
            force_retrain_without_drift_decides_to_retrain,
            a_run_where_only_a_duplicate_arrives_trains_nothing,
            a_model_below_the_floor_is_not_blessed_alerts_and_serving_is_unchanged,
            the_runs_own_metrics_answer_every_dashboard_panel_and_alert_rule,
        ],
        stack,
        runs,
    )
