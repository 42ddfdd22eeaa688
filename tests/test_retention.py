"""The retention step on a prepared CREDIT_RISK_HOME: it removes exactly the raw data past retention or needed by
no model in use, never that of the serving model or its rollback target, and keeps the ledger, the lineage and ML
Metadata consistent with what is left on disk.

The home holds five models (v1..v5; v5 serves, v4 is its rollback target), batches of every kind, and an ML
Metadata store written with ML Metadata's own API in the shape TFX gives it (a `pipeline_run` context per run,
`Examples` and `PushedModel` artifacts, ExampleGen executions with their `input_base`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from common.config import settings
from common.records import batch_ledger
from tfx_modules.data_gate import retention

DAY = retention.DAY
RETENTION_DAYS = 30
# name -> (status, days since it was filed); which model trained on which batch is in MODELS
BATCHES = {
    "ancient": ("accepted", 400),  # trained v1 only (out of use): goes
    "rollback": ("accepted", 200),  # trained v4, the rollback target: stays though past retention
    "serving": ("accepted", 100),  # trained v5, which serves: stays though past retention
    "unused-old": ("accepted", 90),  # trained nothing: goes
    "fresh": ("accepted", 3),  # trained nothing yet, within retention: stays (future training data)
    "bad-old": ("quarantined", 60),  # goes, with its reports
    "bad-new": ("quarantined", 5),  # stays
}
MODELS = {1: ["ancient"], 2: ["ancient"], 3: ["ancient"], 4: ["rollback"], 5: ["rollback", "serving"]}
# pipeline runs in ML Metadata, oldest first: (run, pushed version or None)
RUNS = [("run1", 1), ("run3", 3), ("run4", 4), ("run5", 5), ("failed", None), ("train", None)]


def _sha(name: str) -> str:
    return f"{name:0<64}"[:64]


def _store(path: Path) -> metadata_store.MetadataStore:
    config = mlmd.ConnectionConfig()
    config.sqlite.filename_uri = str(path)
    config.sqlite.connection_mode = mlmd.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    return metadata_store.MetadataStore(config)


def _run_in_metadata(store, types: dict, run: str, pushed: int | None, root: Path) -> Path:
    """One pipeline run as TFX records it; returns its ExampleGen input folder."""
    (context_id,) = store.put_contexts([mlmd.Context(type_id=types["pipeline_run"], name=run)])
    input_base = root / ("inputs" if run == "train" else "data") / run
    (input_base / "batch.csv").parent.mkdir(parents=True)
    (input_base / "batch.csv").write_text("rows\n")
    execution = mlmd.Execution(type_id=types["CsvExampleGen"], last_known_state=mlmd.Execution.COMPLETE)
    execution.custom_properties["input_base"].string_value = str(input_base)
    outputs = []
    for component in ("CsvExampleGen/examples", "Transform/transformed_examples"):
        uri = root / component / run
        (uri / "Split-train").mkdir(parents=True)
        (uri / "Split-train" / "data.gz").write_bytes(b"rows")
        outputs.append(mlmd.Artifact(type_id=types["Examples"], uri=str(uri), state=mlmd.Artifact.LIVE))
    if pushed is not None:
        artifact = mlmd.Artifact(type_id=types["PushedModel"], uri=str(root / "Pusher" / run), state=mlmd.Artifact.LIVE)
        artifact.custom_properties["pushed_version"].string_value = str(pushed)
        outputs.append(artifact)
    event = mlmd.Event(type=mlmd.Event.OUTPUT)
    context = mlmd.Context(id=context_id, type_id=types["pipeline_run"], name=run)
    store.put_execution(execution, [(a, event) for a in outputs], [context])
    return input_base


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CREDIT_RISK_HOME", str(tmp_path))
    monkeypatch.setenv("CREDIT_RISK_RETENTION_DAYS", str(RETENTION_DAYS))
    s = settings()
    now = time.time()
    ledger = {}
    for name, (status, age) in BATCHES.items():
        folder = s.accepted_dir if status == "accepted" else s.quarantine_dir
        stored = folder / f"{name}.csv"
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_text("person_age,...\n")
        if status == "quarantined":
            for report in batch_ledger.quarantine_reports(stored):
                report.write_text("why")
        ledger[_sha(name)] = {"name": f"{name}.csv", "status": status, "path": str(stored), "time": now - age * DAY}
    models = [
        {"version": v, "run_id": f"run{v}", "batches": [_sha(n) for n in names], "time": now - (6 - v) * DAY}
        for v, names in MODELS.items()
    ]
    s.state_dir.mkdir(parents=True)
    (s.state_dir / "batches.json").write_text(json.dumps(ledger))
    (s.state_dir / "lineage.json").write_text(json.dumps({"models": models}))
    record = {"live": {"version": 5}, "previous": {"version": 4}, "history": []}
    (s.state_dir / "serving.json").write_text(json.dumps(record))
    s.metadata_path.parent.mkdir(parents=True)
    store = _store(s.metadata_path)
    types = {
        "pipeline_run": store.put_context_type(mlmd.ContextType(name="pipeline_run")),
        "CsvExampleGen": store.put_execution_type(mlmd.ExecutionType(name="CsvExampleGen")),
        "Examples": store.put_artifact_type(mlmd.ArtifactType(name="Examples")),
        "PushedModel": store.put_artifact_type(mlmd.ArtifactType(name="PushedModel")),
    }
    for run, pushed in RUNS:
        _run_in_metadata(store, types, run, pushed, s.pipeline_root)
    return tmp_path


def _examples(home: Path) -> dict[str, int]:
    """Examples artifact URI (relative to the pipeline root) -> its state in ML Metadata."""
    store = _store(settings().metadata_path)
    root = settings().pipeline_root
    return {str(Path(a.uri).relative_to(root)): a.state for a in store.get_artifacts_by_type("Examples")}


def test_removes_what_is_past_retention_or_unneeded_and_keeps_the_models_in_use(home: Path) -> None:
    s = settings()
    removal = retention.apply(now=time.time() + 2 * DAY)  # every pipeline run is more than a day old by then

    assert removal["versions"] == [4, 5]
    gone = {"ancient", "unused-old", "bad-old"}
    assert sorted(line.split()[0] for line in removal["batches"]) == sorted(f"{name}.csv" for name in gone)
    ledger = batch_ledger.ledger()
    for name, (status, _) in BATCHES.items():
        entry = ledger[_sha(name)]
        stored = Path(entry["path"])
        if name in gone:
            assert entry["status"] == batch_ledger.PURGED and entry["purged"]["was"] == status
            assert f"past the {RETENTION_DAYS}-day retention" in entry["purged"]["reason"]
            assert not stored.exists()
            assert not any(p.exists() for p in batch_ledger.quarantine_reports(stored))
        else:
            assert entry["status"] == status and stored.is_file()
    # The data of the serving model (run5) and of its rollback target (run4) stays; the rest is a day old and goes.
    kept_runs = {"run4", "run5"}
    for uri, state in _examples(home).items():
        run = Path(uri).name
        assert (state == mlmd.Artifact.LIVE) == (run in kept_runs), uri
        assert (s.pipeline_root / uri).exists() == (run in kept_runs), uri
    left = sorted(p.name for folder in ("data", "inputs") for p in (s.pipeline_root / folder).iterdir())
    assert left == sorted(kept_runs)
    assert len(removal["examples"]) == 2 * (len(RUNS) - 2) and len(removal["inputs"]) == len(RUNS) - 2


def test_lineage_stays_consistent_with_the_disk(home: Path) -> None:
    retention.apply(now=time.time() + 2 * DAY)

    ledger = batch_ledger.ledger()
    in_use = retention.versions_in_use(settings())
    for model in batch_ledger.lineage()["models"]:
        assert all(sha in ledger for sha in model["batches"])  # every model still names known batches
        if model["version"] in in_use:  # and those in use have every one of them on disk
            assert all(Path(ledger[sha]["path"]).is_file() for sha in model["batches"])
    for entry in ledger.values():  # the ledger says which files exist
        assert Path(entry["path"]).is_file() == (entry["status"] != batch_ledger.PURGED)
    # Batches past retention train no new model, even those kept for the models in use.
    assert [e["name"] for e in batch_ledger.accepted()] == ["fresh.csv"]


def test_recent_pipeline_data_and_batches_within_retention_stay(home: Path) -> None:
    removal = retention.apply()  # now: every pipeline run is seconds old, a run still under way may need it

    assert removal["examples"] == [] and removal["inputs"] == []
    assert all(state == mlmd.Artifact.LIVE for state in _examples(home).values())
    assert len(removal["batches"]) == 3  # the batches are as old as before


def test_outcome_files_past_retention_go_with_their_reports_and_stay_in_their_ledger(home: Path) -> None:
    from common.records import outcome_ledger
    from outcomes import intake as outcome_intake

    now = time.time()
    entries = {}
    for name, status, age in (("old", "accepted", 40), ("bad", "quarantined", 40), ("new", "accepted", 2)):
        stored = outcome_ledger.folder("accepted" if status == "accepted" else "quarantine") / f"{name}.csv"
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_text("application_id,loan_status\na1,1\n")
        for report in batch_ledger.quarantine_reports(stored) if status == "quarantined" else ():
            report.write_text("why")
        entries[_sha(name)] = {"name": f"{name}.csv", "status": status, "path": str(stored), "time": now - age * DAY}
    batch_ledger.save_json(outcome_ledger.book(), entries)

    removal = retention.apply(now=now)

    assert sorted(line.split()[0] for line in removal["outcome_files"]) == ["bad.csv", "old.csv"]
    ledger = batch_ledger.ledger(outcome_ledger.book())
    for name in ("old", "bad"):
        entry = ledger[_sha(name)]
        assert (
            entry["status"] == batch_ledger.PURGED
            and f"past the {RETENTION_DAYS}-day retention" in entry["purged"]["reason"]
        )
        assert not Path(entry["path"]).exists()
        assert not any(p.exists() for p in batch_ledger.quarantine_reports(Path(entry["path"])))
    assert ledger[_sha("new")]["status"] == "accepted" and Path(ledger[_sha("new")]["path"]).is_file()
    assert list(outcome_intake.known()["application_id"]) == ["a1"]  # only the file within retention is left to join
