"""Get the real Kaggle credit-risk CSV into data/raw/ and print its path (last stdout line) for `make`.

Sources, first that applies: `--source <csv>`, `$CREDIT_RISK_DATASET`, `../shared/data/credit_risk_dataset.csv`
beside the project (dev and CI machines), the Kaggle CLI. The file is checked (the 12 columns, every row typed by
`tfx_modules.data_gate.dataset.read_batch`) before it is copied, so a broken download never reaches training.
With `--or-generate`, a machine without the real data gets 32,581 seeded generated rows instead.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import config, features
from data import generate
from tfx_modules.data_gate import dataset

FILE_NAME = "credit_risk_dataset.csv"
GENERATED_NAME = "generated.csv"
RAW_DIR = config.PROJECT_ROOT / "data" / "raw"
SHARED_DATASET = config.PROJECT_ROOT.parent / "shared" / "data" / FILE_NAME
DATASET_ENV = "CREDIT_RISK_DATASET"
KAGGLE_DATASET = "laotse/credit-risk-dataset"
KAGGLE_TIMEOUT_S = 600
# sha256 of the known copy, with LF and with CRLF line endings (see data/README.md).
KNOWN_SHA256 = {
    "cba7630f63c1fda05458c4fedb36937bd5dcb4f89a9da6c821cd3bbb5b032c87",
    "07a70394593c1e25c968d129b7ac7dd0e959514a15115bdc5f5cc08e0ff7064a",
}
KAGGLE_HELP = f"""\
To download it from Kaggle:
  1. pip install kaggle   (any Python environment; it is not a project dependency)
  2. on kaggle.com: Settings -> API -> Create New Token; save kaggle.json as ~/.kaggle/kaggle.json (chmod 600),
     or export KAGGLE_USERNAME and KAGGLE_KEY
  3. run this again, or download by hand: kaggle datasets download {KAGGLE_DATASET} --unzip
Or point to a copy: --source <csv> (make data DATA=<csv>) or ${DATASET_ENV}=<csv>.
Or use generated data: --or-generate."""


class FetchError(Exception):
    """No usable dataset; the message says what was tried and what to do."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.fetch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, help="a local copy of credit_risk_dataset.csv")
    parser.add_argument("--dest-dir", type=Path, default=RAW_DIR, help="where to put it (default: data/raw)")
    parser.add_argument(
        "--or-generate", action="store_true", help="generate data when no real dataset is available (never an error)"
    )
    args = parser.parse_args(argv)
    try:
        print(fetch(args.source, args.dest_dir, or_generate=args.or_generate))
    except FetchError as err:
        print(f"data.fetch: error: {err}", file=sys.stderr)
        return 1
    return 0


def fetch(source: Path | None, dest_dir: Path, *, or_generate: bool = False) -> Path:
    """Install the dataset from the first source that applies into `dest_dir`; return the installed path."""
    explicit = source or config.settings().dataset
    if explicit:
        return install(explicit, dest_dir)
    if SHARED_DATASET.is_file():
        return install(SHARED_DATASET, dest_dir)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            downloaded = download_from_kaggle(Path(tmp))
        except FetchError as err:
            if not or_generate:
                looked = f"looked at --source, ${DATASET_ENV}, {SHARED_DATASET}"
                raise FetchError(f"no real dataset found ({looked}); {err}") from err
            return write_generated(dest_dir, reason=str(err).splitlines()[0])
        return install(downloaded, dest_dir)


def install(source: Path, dest_dir: Path) -> Path:
    """Check `source` and copy it to `dest_dir` (atomically; skipped when it is already there)."""
    if not source.is_file():
        raise FetchError(f"{source}: no such file")
    check(source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    known = "matches the known Kaggle copy" if digest in KNOWN_SHA256 else "differs from the known Kaggle copy"
    print(f"{source}: sha256 {digest} {known}", file=sys.stderr)
    target = dest_dir / FILE_NAME
    if target.resolve() != source.resolve():
        dest_dir.mkdir(parents=True, exist_ok=True)
        partial = dest_dir / f".{FILE_NAME}.partial"
        shutil.copyfile(source, partial)
        partial.replace(target)
    return target


def check(path: Path) -> None:
    """Raise FetchError unless `path` has exactly the 12 dataset columns and every row is typed correctly."""
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        header = next(csv.reader(f), [])
    if sorted(header) != sorted(features.COLUMNS):
        missing = sorted(set(features.COLUMNS) - set(header))
        extra = sorted(set(header) - set(features.COLUMNS))
        raise FetchError(f"{path}: not the credit-risk dataset: header missing {missing}, unexpected {extra}")
    try:
        rows = len(dataset.read_batch(path))
    except dataset.DataError as err:
        raise FetchError(f"{path}: {err.reason}") from err
    print(f"{path}: {rows} rows, {len(header)} columns", file=sys.stderr)


def download_from_kaggle(into: Path) -> Path:
    """Download and unzip the dataset with the Kaggle CLI, if it is installed and has credentials."""
    exe = shutil.which("kaggle")
    if not exe:
        raise FetchError(f"the kaggle CLI is not installed.\n{KAGGLE_HELP}")
    command = [exe, "datasets", "download", KAGGLE_DATASET, "--path", str(into), "--unzip"]
    print(f"downloading: {' '.join(command[1:])}", file=sys.stderr)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=KAGGLE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as err:
        raise FetchError(f"kaggle download took over {KAGGLE_TIMEOUT_S} s.\n{KAGGLE_HELP}") from err
    if done.returncode != 0:
        raise FetchError(f"kaggle download failed: {(done.stderr or done.stdout).strip()[-500:]}\n{KAGGLE_HELP}")
    found = sorted(into.rglob(FILE_NAME))
    if not found:
        raise FetchError(f"the kaggle download holds no {FILE_NAME}.\n{KAGGLE_HELP}")
    return found[0]


def write_generated(dest_dir: Path, reason: str) -> Path:
    """Generate as many seeded rows as the real dataset has; the note on stderr says this is not real data."""
    print(f"note: {reason}\nnote: using GENERATED data instead of the real dataset", file=sys.stderr)
    return dataset.write_canonical(generate.generate(generate.REAL_ROWS, seed=0), dest_dir / GENERATED_NAME)


if __name__ == "__main__":
    sys.exit(main())
