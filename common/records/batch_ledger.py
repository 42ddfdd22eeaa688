"""The batch ledger and the lineage: what became of each data batch, and which batches trained which model.

A batch is known by the sha256 of its bytes, so a rerun, or the same file arriving twice under any name, is
recognised: the ledger (`state_dir/batches.json`) says what became of it (`purged`: removed by retention). Files are
written before the ledger and the ledger before the incoming file is removed, so a crash at any point leaves the
batch either still incoming or fully recorded. The lineage (`state_dir/lineage.json`) says which batches trained
which model version and where the schema and baseline statistics of that training data are. Standard library only:
the Airflow environment reads both; the intake that fills them is tfx_modules/data_gate/intake.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

from common.config import settings

IGNORED_SUFFIXES = (".part", ".partial", ".tmp")  # files still being written
PURGED = "purged"  # the status of a batch whose file retention removed (the ledger keeps its record)
log = logging.getLogger(__name__)


IGNORED_SUFFIXES = (".part", ".partial", ".tmp")  # files still being written


PURGED = "purged"  # the status of a batch whose file retention removed (the ledger keeps its record)


log = logging.getLogger(__name__)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def safe_name(text: str) -> str:
    """A run id or file stem usable as a file name (run ids carry ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def load_json(path: Path, empty: dict) -> dict:
    return json.loads(path.read_text()) if path.exists() else empty


def save_json(path: Path, data: dict) -> None:
    """Write JSON atomically: a reader sees the old or the new document, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2, sort_keys=True))
    partial.replace(path)


def _ledger_path() -> Path:
    return settings().state_dir / "batches.json"


def _lineage_path() -> Path:
    return settings().state_dir / "lineage.json"


def ledger(book: Path | None = None) -> dict[str, dict]:
    """Every batch ever seen, by sha256 (`book`: another ledger kept the same way, e.g. the outcome files')."""
    return load_json(book or _ledger_path(), {})


def _record(sha: str, entry: dict, book: Path | None = None) -> dict:
    entries = ledger(book)
    entries[sha] = {**entries.get(sha, {}), **entry}
    save_json(book or _ledger_path(), entries)
    return entries[sha]


def being_written(paths: list[Path]) -> set[Path]:
    """Those of `paths` that a process on this machine holds open for writing (Linux /proc): a batch copied into
    the incoming folder under its final name is not whole yet. A writer on another machine cannot be seen: it must
    write a dot-file or a name ending in IGNORED_SUFFIXES and rename it when done."""
    wanted = {os.path.realpath(p): p for p in paths}
    found: set[Path] = set()
    for fds in Path("/proc").glob("[0-9]*/fd") if wanted else ():
        try:
            entries = os.listdir(fds)
        except OSError:  # gone, or not ours to see
            continue
        for fd in entries:
            try:
                target = os.readlink(fds / fd)
                if target in wanted and _opened_for_writing(fds.parent / "fdinfo" / fd):
                    found.add(wanted[target])
            except OSError:
                continue
    return found


def _opened_for_writing(fdinfo: Path) -> bool:
    flags = next(line for line in fdinfo.read_text().splitlines() if line.startswith("flags:"))
    return int(flags.split()[1], 8) & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)


def pending(only: str | None = None, folder: Path | None = None, book: Path | None = None) -> list[Path]:
    """Files waiting in the incoming folder (or `folder`, with its ledger `book`), oldest first (nanosecond mtimes,
    ties by name: a total order that is the same on every call); `only` restricts to one file name. A file still
    being written waits for a later run.

    A named file that is gone but in the ledger was processed by an earlier (or this, rerun) run: nothing to do.
    """
    incoming = folder or settings().incoming_dir
    incoming.mkdir(parents=True, exist_ok=True)
    if only:
        path = incoming / Path(only).name
        if path.is_file():
            return _whole([path])
        if any(entry["name"] == path.name for entry in ledger(book).values()):
            return []
        raise FileNotFoundError(f"batch {only!r} is neither in {incoming} nor among the batches already processed")
    files = [p for p in incoming.iterdir() if p.is_file() and not p.name.startswith(".")]
    waiting = [p for p in files if not p.name.endswith(IGNORED_SUFFIXES)]
    return sorted(_whole(waiting), key=lambda p: (p.stat().st_mtime_ns, p.name))


def _whole(paths: list[Path]) -> list[Path]:
    writing = being_written(paths)
    for path in sorted(writing):
        log.warning("batch %s is still being written: left for a later run", path.name)
    return [p for p in paths if p not in writing]


def stored_name(path: Path, sha: str, suffix: str) -> str:
    return f"{safe_name(path.stem)}-{sha[:12]}{suffix}"


def filed(path: Path, sha: str, run_id: str, stored: Path, book: Path | None = None, **counts: int) -> dict:
    """Record an accepted file, kept as `stored`, in the ledger (or `book`), then drop the incoming file."""
    entry = _record(sha, _entry(path, "accepted", run_id, stored, **counts), book)
    path.unlink()
    return entry


def quarantine(
    path: Path,
    sha: str,
    run_id: str,
    reason: str,
    anomalies: dict[str, str],
    *,
    folder: Path | None = None,
    book: Path | None = None,
) -> dict:
    """Move the batch, untouched, to the quarantine folder beside a JSON and a Markdown report of why (`folder` and
    `book`: another quarantine folder and ledger, e.g. the outcome files')."""
    folder = folder or settings().quarantine_dir
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / stored_name(path, sha, path.suffix)
    entry = _entry(path, "quarantined", run_id, target, reason=reason, anomalies=anomalies)
    report_json, report_md = quarantine_reports(target)
    save_json(report_json, entry)
    lines = [f"# Quarantined batch `{path.name}`", "", f"- sha256: `{sha}`", f"- run: `{run_id}`"]
    lines += [f"- kept as: `{target.name}`", "", f"**Reason:** {reason}", ""]
    lines += [f"- `{column}`: {text}" for column, text in anomalies.items()]
    report_md.write_text("\n".join(lines) + "\n")
    shutil.copyfile(path, target)  # not copy2: the copy gets the umask's owner-only mode, not the incoming file's
    entry = _record(sha, entry, book)
    path.unlink()
    return entry


def quarantine_reports(stored: Path) -> tuple[Path, Path]:
    """The JSON and the Markdown report of why, beside a quarantined batch."""
    return stored.with_name(stored.name + ".report.json"), stored.with_name(stored.name + ".report.md")


def mark_purged(sha: str, reason: str, now: float, book: Path | None = None) -> dict:
    """Record that retention removed a batch's file: its entry stays, with what it was and why it went."""
    entry = ledger(book)[sha]
    return _record(sha, {"status": PURGED, "purged": {"time": now, "was": entry["status"], "reason": reason}}, book)


def drop_duplicate(path: Path, sha: str, run_id: str, book: Path | None = None) -> dict:
    """A file whose content is already recorded: note the extra name and remove it (its bytes are kept)."""
    known = ledger(book)[sha]
    if not Path(known["path"]).is_file():
        raise RuntimeError(f"{path.name} duplicates {known['name']}, whose stored copy {known['path']} is missing")
    _record(sha, {"duplicates": sorted({*known.get("duplicates", []), path.name})}, book)
    path.unlink()
    reason = f"same content as {known['name']} ({known['status']} by run {known['run_id']})"
    return {**_entry(path, "duplicate", run_id, Path(known["path"]), reason=reason), "sha256": sha}


def _entry(path: Path, status: str, run_id: str, stored: Path, **extra) -> dict:
    return {"name": path.name, "status": status, "run_id": run_id, "path": str(stored), "time": time.time(), **extra}


def accepted(now: float | None = None) -> list[dict]:
    """Accepted batches within the retention period, oldest first, each with its sha256: together they are the
    training data. An older one trains no new model; it stays on disk only while a model in use was trained on it
    (tfx_modules/data_gate/retention.py)."""
    oldest = (time.time() if now is None else now) - settings().retention_seconds
    entries = [{**e, "sha256": sha} for sha, e in ledger().items() if e["status"] == "accepted" and e["time"] >= oldest]
    return sorted(entries, key=lambda e: e["time"])


def fingerprint(shas: list[str]) -> str:
    """Identity of a training set: the same accepted batches give the same fingerprint whatever their order."""
    return hashlib.sha256("\n".join(sorted(shas)).encode()).hexdigest()


def lineage() -> dict:
    """`{"models": [{"version", "run_id", "batches", "fingerprint", "metrics", "model_path", "baseline"}, ...]}`."""
    return load_json(_lineage_path(), {"models": []})


def serving_model() -> dict | None:
    """The latest blessed model version: the one serving runs and the one batches are compared with."""
    models = lineage()["models"]
    return models[-1] if models else None


def baseline_dir(version: int) -> Path:
    return settings().state_dir / "baselines" / str(version)


def training_folder(run_id: str) -> dict:
    """A per-run folder of links to all accepted batches: the data root of this run's TFX pipeline."""
    batches = accepted()
    if not batches:
        raise RuntimeError("no accepted batch to train on")
    folder = settings().pipeline_root / "data" / safe_name(run_id)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for batch in batches:
        source, link = Path(batch["path"]), folder / Path(batch["path"]).name
        try:
            os.link(source, link)
        except OSError:  # another file system
            shutil.copy2(source, link)
    shas = [b["sha256"] for b in batches]
    return {"data_root": str(folder), "batches": shas, "fingerprint": fingerprint(shas)}


def record_run(run_id: str, result: dict) -> Path:
    """Keep a run's outcome (`state_dir/runs/<run>.json`) and point `state_dir/last_run.json` at it."""
    state = settings().state_dir
    entry = {"run_id": run_id, "time": time.time(), **result}
    save_json(state / "runs" / f"{safe_name(run_id)}.json", entry)
    save_json(state / "last_run.json", entry)
    return state / "last_run.json"


def add_model(model: dict) -> dict:
    """Append a blessed model's lineage entry (tfx_modules/data_gate/intake.py's `record_model` builds it)."""
    history = lineage()
    history["models"].append(model)
    save_json(_lineage_path(), history)
    return model
