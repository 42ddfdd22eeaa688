"""Batches arriving while an intake runs, and one still being written in place under its final name: every whole
batch is filed exactly once, the one being written is not read until its writer is done. Each intake is the DAG's
(`intake.intake`) in its own ML-environment process, as the ML worker runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from common import config
from common.records import batch_ledger
from data.generate import generate
from testing.harness import wait_for
from tests.conftest import ml_env
from tfx_modules.data_gate import dataset

pytestmark = [pytest.mark.faults, pytest.mark.slow]  # intakes in ML-environment processes side by side: a minute

ROWS = 300
INTAKE = (
    "import json, sys; from tfx_modules.data_gate import intake; "
    "print(json.dumps(intake.intake(sys.argv[1], None, None)))"
)


def start_intake(home: Path, run_id: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", INTAKE, run_id],
        env=ml_env(home),
        cwd=config.PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(proc: subprocess.Popen) -> tuple[list[str], str]:
    """The names of the batches the intake filed, and its log."""
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return [b["name"] for b in json.loads(out.strip().splitlines()[-1])["batches"]], err


def deliver(source: Path, incoming: Path) -> None:
    """As `make run-dag` delivers: a dot-file renamed into place once whole."""
    partial = incoming / f".{source.name}.partial"
    partial.write_bytes(source.read_bytes())
    partial.replace(incoming / source.name)


def test_batches_arriving_during_a_run_and_one_being_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home, staged = tmp_path / "home", tmp_path / "staged"
    monkeypatch.setenv("CREDIT_RISK_HOME", str(home))
    incoming = config.settings().incoming_dir
    incoming.mkdir(parents=True)
    files = {n: dataset.write_canonical(generate(ROWS, seed=i), staged / f"{n}.csv") for i, n in enumerate("abcd")}
    deliver(files["a"], incoming)
    whole = files["d"].read_bytes()
    half = whole.rfind(b"\n", 0, len(whole) // 2) + 1  # whole lines: a reader could not tell it is cut short

    with (incoming / "d.csv").open("wb") as writer:  # copied in place, under its final name, by a slow writer
        writer.write(whole[:half])
        writer.flush()
        first = start_intake(home, "run1")
        report = config.settings().reports_dir / "run1" / "report.json"
        wait_for(report.exists, 120, "the first run to file batch a", interval=0.05)
        for name in ("b", "c"):  # arrive while that run is still under way
            deliver(files[name], incoming)
        names, log = finished(first)
        assert names == ["a.csv"]
        assert "batch d.csv is still being written: left for a later run" in log
        assert (incoming / "d.csv").read_bytes() == whole[:half]
        writer.write(whole[half:])

    names, _ = finished(start_intake(home, "run2"))
    assert names == ["b.csv", "c.csv", "d.csv"]
    assert sorted(p.name for p in incoming.iterdir()) == []
    entries = batch_ledger.ledger()
    assert sorted(e["name"] for e in entries.values()) == ["a.csv", "b.csv", "c.csv", "d.csv"]
    assert {(e["status"], e["rows"]) for e in entries.values()} == {("accepted", ROWS)}
    assert {e["run_id"] for e in entries.values() if e["name"] != "a.csv"} == {"run2"}
