"""Retention of raw applicant data: what is past `CREDIT_RISK_RETENTION_DAYS`, or needed by no model in use, goes.

Raw applicant data under CREDIT_RISK_HOME: accepted and quarantined batches and outcome files, the pipeline's input
folders (the DAG's `pipeline/data/<run>` links, `make train`'s `pipeline/inputs/<stamp>` copies) and the pipeline's
`Examples` artifacts (CsvExampleGen's and Transform's outputs). The models in use are the serving model and its rollback
target (state/serving.json's live and previous) and the newest one in the lineage (the drift gate's baseline).

- An accepted batch older than the retention period goes unless a model in use was trained on it. (Past retention
  it trains no new model: `batch_ledger.accepted` leaves it out.)
- A quarantined batch goes, with its reports, once older than the retention period.
- An outcome file (outcomes/intake.py: application ids and their outcomes), accepted or quarantined, goes once
  older than the retention period, as batches do and in its own ledger; the outcomes joined to predictions live
  on in the training batches made from them, under the rules above.
- The input folders and Examples of a pipeline run that pushed no model in use go once a day old (or the
  retention period, if shorter), so a run still under way keeps them; those of a model in use stay as long as it is.

Removed batches stay in the ledger as `purged` (when, what they were, why); removed Examples are marked DELETED in
ML Metadata, so the lineage never points at data that is gone. Every removal is printed (the task log). Runs in the
ML environment (ML Metadata) as the DAG's last step.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from common.config import Settings, settings
from common.records import batch_ledger, outcome_ledger
from common.records.deploy_record import read_record

DAY = 86400.0
PIPELINE_RUN = "pipeline_run"  # TFX's context type of one pipeline run
INPUT_FOLDERS = ("data", "inputs")  # under the pipeline root: the DAG's per-run links, `make train`'s copies


@dataclass
class Removal:
    """What one retention pass removed; `versions` are the models in use it kept the data of."""

    versions: list[int]
    batches: list[str] = field(default_factory=list)
    outcome_files: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)


def versions_in_use(s: Settings) -> set[int]:
    """The serving model, its rollback target and the newest model of the lineage."""

    record = read_record(s)
    in_use = {entry["version"] for entry in (record.get("live"), record.get("previous")) if entry}
    models = batch_ledger.lineage()["models"]
    return (in_use | {models[-1]["version"]}) if models else in_use


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _remove(path: Path, home: Path) -> None:
    """Delete a file or a folder under `home` (never anything outside it)."""
    if not _inside(path, home):
        raise ValueError(f"refusing to remove {path}: it is not under {home}")
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def purge_batches(s: Settings, in_use: set[int], now: float, removal: Removal) -> None:
    """Accepted batches past retention that no model in use was trained on; quarantined ones past retention."""
    needed = {sha for m in batch_ledger.lineage()["models"] if m["version"] in in_use for sha in m["batches"]}
    removal.batches += _purge_files(s, now, needed, None, "batch")


def purge_outcome_files(s: Settings, now: float, removal: Removal) -> None:
    """Outcome files, accepted or quarantined, past retention (their joined outcomes live on in training batches)."""

    removal.outcome_files += _purge_files(s, now, set(), outcome_ledger.book(), "outcome file")


def _purge_files(s: Settings, now: float, needed: set[str], book: Path | None, what: str) -> list[str]:
    """Remove the files of a ledger (`book`; None: the batches') past retention and not `needed`, mark them purged."""
    oldest, removed = now - s.retention_seconds, []
    for sha, entry in batch_ledger.ledger(book).items():
        if entry["time"] >= oldest or entry["status"] not in ("accepted", "quarantined") or sha in needed:
            continue
        stored = Path(entry["path"])
        doomed = [stored, *batch_ledger.quarantine_reports(stored)] if entry["status"] == "quarantined" else [stored]
        for path in doomed:
            _remove(path, s.home)
        why = (
            f"{entry['status']} {(now - entry['time']) / DAY:.1f} days ago, past the {s.retention_days:g}-day retention"
        )
        if entry["status"] == "accepted" and book is None:
            why += ", and no model in use was trained on it"
        batch_ledger.mark_purged(sha, why, now, book)
        removed.append(f"{entry['name']} ({entry['status']}, {stored})")
        print(f"retention: removed {entry['status']} {what} {entry['name']} ({stored}): {why}", flush=True)
    return removed


def _store(s: Settings) -> metadata_store.MetadataStore:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(s.metadata_path)
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE
    return metadata_store.MetadataStore(config)


def _runs_in_use(store: metadata_store.MetadataStore, in_use: set[int]) -> set[int]:
    """Ids of the pipeline-run contexts that pushed a model in use."""
    runs = set()
    for pushed in store.get_artifacts_by_type("PushedModel"):
        version = pushed.custom_properties["pushed_version"].string_value
        if version.isdigit() and int(version) in in_use:
            runs |= {c.id for c in store.get_contexts_by_artifact(pushed.id) if c.type == PIPELINE_RUN}
    return runs


def purge_pipeline_data(s: Settings, in_use: set[int], now: float, removal: Removal) -> None:
    """Examples artifacts and input folders of pipeline runs that pushed no model in use, once a day old."""
    if not s.metadata_path.exists():
        return
    unneeded_after = min(DAY, s.retention_seconds)
    store = _store(s)
    runs = _runs_in_use(store, in_use)
    kept_inputs = {
        Path(execution.custom_properties["input_base"].string_value).resolve()
        for run in runs
        for execution in store.get_executions_by_context(run)
        if "input_base" in execution.custom_properties
    }
    for artifact in store.get_artifacts_by_type("Examples"):
        age = now - artifact.create_time_since_epoch / 1000
        if artifact.state != metadata_store_pb2.Artifact.LIVE or age < unneeded_after:
            continue
        if {c.id for c in store.get_contexts_by_artifact(artifact.id)} & runs:
            continue
        _remove(Path(artifact.uri), s.pipeline_root)
        artifact.state = metadata_store_pb2.Artifact.DELETED
        store.put_artifacts([artifact])
        removal.examples.append(artifact.uri)
        print(f"retention: removed Examples {artifact.uri} ({age / DAY:.1f} days old, no model in use)", flush=True)
    for folder in (s.pipeline_root / name for name in INPUT_FOLDERS):
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            age = now - path.stat().st_mtime
            if path.resolve() in kept_inputs or age < unneeded_after:
                continue
            _remove(path, s.pipeline_root)
            removal.inputs.append(str(path))
            print(f"retention: removed pipeline input {path} ({age / DAY:.1f} days old, no model in use)", flush=True)


def apply(now: float | None = None) -> dict:
    """One retention pass over this CREDIT_RISK_HOME; returns what it removed (the DAG's XCom)."""
    s = settings()
    now = time.time() if now is None else now
    in_use = versions_in_use(s)
    removal = Removal(sorted(in_use))
    purge_batches(s, in_use, now, removal)
    purge_outcome_files(s, now, removal)
    purge_pipeline_data(s, in_use, now, removal)
    print(
        f"retention ({s.retention_days:g} days; models in use: {removal.versions or 'none'}): removed "
        f"{len(removal.batches)} batches, {len(removal.outcome_files)} outcome files, {len(removal.examples)} "
        f"Examples, {len(removal.inputs)} input folders",
        flush=True,
    )
    return asdict(removal)
