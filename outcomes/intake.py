"""Loan outcomes, known months after the decision: files `application_id,loan_status[,observed_at]` taken in once.

    python -m outcomes.intake drop FILE   # what `make outcomes FILE=<csv>` does: into the intake folder

Files dropped into `outcomes_dir/incoming/` are taken in by each live-monitoring run, as the retraining DAG takes
in batches (tfx_modules/data_gate/intake.py: its ledger, duplicate and quarantine handling, here with their own ledger
`state_dir/outcomes.json` and folders). A file is read typed (an id on every row, a status of 0 or 1, an ISO date or
time when `observed_at` is given); one that cannot be, or that gives an application two different outcomes (within
the file or against an outcome already recorded), is quarantined whole with a reason report. Otherwise its new
outcomes are stored canonically in `outcomes_dir/accepted/`, and the ledger counts its rows, the repeats of outcomes
already known and the outcomes of applications with no logged prediction yet (waiting: they join when the
prediction is logged). Nothing is deleted; the same content twice is taken in once.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import pandas as pd

from common.features import LABEL
from common.records import batch_ledger, outcome_ledger
from tfx_modules.data_gate import dataset
from tfx_modules.data_gate.dataset import DataError

ID = "application_id"
OBSERVED = "observed_at"
COLUMNS = (ID, LABEL, OBSERVED)
OUTCOME = "outcome"  # the joined outcome: 1 default, 0 repaid, NaN not known yet
ISO_TIME = r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?"  # a date, or a time of day


def read(path: Path) -> pd.DataFrame:
    """The file's outcomes (id, 0/1 status, ISO `observed_at` or empty); a DataError saying why it cannot be read."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror}") from err
    dataset.check_text(data)
    lines, records = dataset.csv_records(dataset.decode(data))
    header = [name.strip() for name in records[0]]
    missing = [c for c in (ID, LABEL) if c not in header]
    if len(missing) == 2:
        raise DataError(f"no header row: the first line names neither {ID} nor {LABEL}")
    if missing:
        raise DataError(f"missing column: {missing[0]}")
    if len(records) == 1:
        raise DataError("no data rows: the file has a header only")
    if any(len(r) != len(header) for r in records[1:]):
        ragged = pd.Series([len(r) != len(header) for r in records[1:]], index=lines[1:])
        raise DataError(
            f"rows with another number of fields than the header ({len(header)}) at {dataset.where(ragged)}"
        )
    raw = pd.DataFrame(records[1:], columns=header, index=lines[1:])
    ids, status = raw[ID].str.strip(), raw[LABEL].str.strip()
    if ids.isin(dataset.MISSING_TOKENS).any():
        raise DataError(f"column {ID!r}: no application id at {dataset.where(ids.isin(dataset.MISSING_TOKENS))}")
    if not status.isin(("0", "1")).all():
        raise DataError(
            f"column {LABEL!r}: the outcome must be 0 or 1, found {dataset.where(~status.isin(('0', '1')), status)}"
        )
    observed = raw[OBSERVED].str.strip() if OBSERVED in raw else pd.Series("", index=raw.index)
    given = ~observed.isin(dataset.MISSING_TOKENS)
    iso = observed.str.fullmatch(ISO_TIME)
    times = pd.to_datetime(observed.where(given & iso), utc=True, errors="coerce")
    if (times.isna() & given).any():
        raise DataError(
            f"column {OBSERVED!r}: not an ISO date or time at {dataset.where(times.isna() & given, observed)}"
        )
    stamps = times.dt.strftime("%Y-%m-%dT%H:%M:%SZ").where(given, "")
    return pd.DataFrame({ID: ids, LABEL: status.astype("int64"), OBSERVED: stamps}).reset_index(drop=True)


def known() -> pd.DataFrame:
    """Every accepted outcome, one per application (conflicting files are quarantined, repeats not stored)."""
    paths = [e["path"] for e in batch_ledger.ledger(outcome_ledger.book()).values() if e["status"] == "accepted"]
    frames = [pd.read_csv(p, dtype={ID: str, OBSERVED: str}, keep_default_na=False) for p in paths]
    empty = pd.DataFrame({ID: pd.Series(dtype=str), LABEL: pd.Series(dtype="int64"), OBSERVED: pd.Series(dtype=str)})
    return pd.concat([empty, *frames], ignore_index=True)


def _conflicts(frame: pd.DataFrame, before: pd.DataFrame) -> dict[str, str]:
    """Applications given two outcomes, within the file or against one recorded before, with what was said."""
    within = frame.groupby(ID)[LABEL].nunique()
    found = {i: "both 0 and 1 in this file" for i in within.index[within > 1]}
    pairs = frame[[ID, LABEL]].merge(before[[ID, LABEL]], on=ID, suffixes=("", "_before"))
    differ = pairs[pairs[LABEL] != pairs[f"{LABEL}_before"]]
    for app, status, earlier in differ.itertuples(index=False):
        found.setdefault(app, f"{status} here, {earlier} recorded before")
    return found


def intake(run_id: str, logged: set[str]) -> list[dict]:
    """Take in every waiting outcome file; `logged`: application ids with a logged prediction. One entry per file."""
    incoming = outcome_ledger.folder("incoming")
    incoming.mkdir(parents=True, exist_ok=True)
    entries = []
    for path in batch_ledger.pending(folder=incoming, book=outcome_ledger.book()):
        sha = batch_ledger.sha256(path)
        if sha in batch_ledger.ledger(outcome_ledger.book()):
            entries.append(batch_ledger.drop_duplicate(path, sha, run_id, outcome_ledger.book()))
            continue
        entries.append({**_take(path, sha, run_id, logged), "sha256": sha})
    return entries


def _quarantine(path: Path, sha: str, run_id: str, reason: str, found: dict[str, str]) -> dict:
    return batch_ledger.quarantine(
        path, sha, run_id, reason, found, folder=outcome_ledger.folder("quarantine"), book=outcome_ledger.book()
    )


def _take(path: Path, sha: str, run_id: str, logged: set[str]) -> dict:
    try:
        frame = read(path)
    except DataError as err:
        return _quarantine(path, sha, run_id, err.reason, {})
    before = known()
    conflicts = _conflicts(frame, before)
    if conflicts:
        shown = dict(sorted(conflicts.items())[:20])
        reason = f"conflicting outcomes for {len(conflicts)} application(s): " + ", ".join(list(shown)[:3])
        return _quarantine(path, sha, run_id, reason, shown)
    fresh = frame.drop_duplicates(ID)
    fresh = fresh[~fresh[ID].isin(before[ID])]
    target = outcome_ledger.folder("accepted") / batch_ledger.stored_name(path, sha, ".csv")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    fresh.to_csv(partial, index=False)
    partial.replace(target)
    counts = {
        "rows": len(frame),
        "new": len(fresh),
        "repeats": len(frame) - len(fresh),
        "waiting": int((~fresh[ID].isin(logged)).sum()),
    }
    return batch_ledger.filed(path, sha, run_id, target, outcome_ledger.book(), **counts)


def drop(source: Path) -> Path:
    """Copy an outcome file into the intake folder, whole or not at all (a `.partial` name while copying)."""
    incoming = outcome_ledger.folder("incoming")
    incoming.mkdir(parents=True, exist_ok=True)
    target = incoming / source.name
    partial = target.with_name(target.name + ".partial")
    shutil.copyfile(source, partial)
    partial.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["drop"])
    parser.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    try:
        print(drop(args.file))
    except OSError as err:
        print(f"cannot drop {args.file}: {err.strerror}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
