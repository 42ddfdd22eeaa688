"""End-to-end runs of the retraining DAG with `airflow dags test` (through `scripts/airflow_local.py run-dag`).

One module-wide state directory, in order: the first batch trains and deploys a model (its task logs show no
error, and it leaves nothing in TMPDIR); a resample is skipped; shifted numeric and category batches drift
(gate-only run: the retrain decision and alerts, without a second training); corrupt batches and a duplicate are
quarantined or dropped with nothing pushed; a failing task alerts. Alerts land in a local SMTP server (aiosmtpd)
and a local Slack webhook sink; StatsD in a local UDP socket; the deploy step talks to the local serving stand-in.
"""

from __future__ import annotations

import email
import html
import json
import random
import re
import socket
import threading
from collections.abc import Iterator
from email import policy
from pathlib import Path

import pytest

from data.generate import generate
from monitoring.testing import MailSink, SlackSink, alert_sinks, dag_alert_connections
from scripts import airflow_local
from tfx_modules import config, dataset, private

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
    home = tmp_path_factory.mktemp("dag_runs")
    tmp = tmp_path_factory.mktemp("dag_runs_tmp")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    with alert_sinks() as (slack, mail, smtp_port), airflow_local.sandbox(home) as sandbox:
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
    result = airflow_local.run_dag_process(environment, batch_file, params, timeout=900)
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


def test_first_batch_trains_deploys_and_announces(stack) -> None:
    home, env, inbox = stack
    mark = inbox.mark()

    code, last, output = run_dag_logged(stack, write(home, "first.csv", generate(3000, seed=21)))

    assert code == 0, last
    assert files_in(Path(env["TMPDIR"])) == []  # no package build, no autograph file, no call's TMPDIR left
    assert not re.search(r"\[error\s*\]|ModuleNotFoundError|Traceback", output), "a successful run logged an error"
    assert "Epoch 1/" in output  # the Trainer's own output reaches its task's log
    assert last.startswith("retrained version=")
    version = last.removeprefix("retrained version=")
    assert versions(home) == [version] and versions(home, "serving") == [version]
    lineage = json.loads((home / "state" / "lineage.json").read_text())["models"]
    assert [m["version"] for m in lineage] == [int(version)] and lineage[0]["rows"] == 3000
    mails, slack, stats = inbox.since(mark)
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
    assert private.exposed(home) == []


def test_resampled_batch_is_skipped(stack) -> None:
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


def test_shifted_numeric_and_category_batches_drift_and_alert(stack) -> None:
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
    "noise.csv": "",
}


def test_corrupt_batches_are_quarantined_and_nothing_is_pushed(stack) -> None:
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


def test_failing_task_alerts(stack) -> None:
    _, _, inbox = stack
    mark = inbox.mark()

    code, last = run_dag(stack, None, batch="never_arrived.csv")

    assert code == 1 and last.startswith("failed:")
    mails, slack, _ = inbox.since(mark)
    assert [s for s, _ in mails] == ["[credit-risk] task credit_risk_retraining.intake failed"]
    assert "never_arrived.csv" in mails[0][1] and "never_arrived.csv" in slack[0]


def test_retention_removes_raw_data_no_model_in_use_needs(stack) -> None:
    """With a retention of 0 days, the run's last step removes every batch but the serving model's, and no pipeline
    data of that model; the ledger says what went."""
    home, _, _ = stack
    before = read_ledger(home)

    code, last = run_dag(stack, None, env={"CREDIT_RISK_RETENTION_DAYS": "0"})

    assert (code, last) == (0, "skipped: no accepted data to train on")  # none is within a 0-day retention
    (model,) = json.loads((home / "state" / "lineage.json").read_text())["models"]
    after = read_ledger(home)
    for sha, entry in after.items():
        if sha in model["batches"]:
            assert entry["status"] == "accepted" and Path(entry["path"]).is_file()
        elif before[sha]["status"] in ("accepted", "quarantined"):
            assert entry["status"] == "purged" and entry["purged"]["was"] == before[sha]["status"]
            assert not Path(entry["path"]).exists()
    assert {e["name"] for e in after.values() if e["status"] == "purged"} >= {"resample.csv", *CORRUPT}
    assert versions(home) == [str(model["version"])]  # models are no raw data: kept
    examples = [p for p in (home / "pipeline").glob("*/*examples/*") if p.is_dir()]
    assert len(examples) == 2  # the serving model's CsvExampleGen and Transform outputs


def test_a_purged_batch_arriving_again_is_taken_in_anew(stack) -> None:
    home, _, _ = stack

    code, last = run_dag(stack, staged(home, "resample.csv"))

    assert (code, last) == (0, "skipped: no drift")  # accepted again (not a duplicate), drift measured
    (entry,) = (e for e in read_ledger(home).values() if e["name"] == "resample.csv")
    assert entry["status"] == "accepted" and Path(entry["path"]).is_file() and "purged" in entry


def read_ledger(home: Path) -> dict[str, dict]:
    return json.loads((home / "state" / "batches.json").read_text())
