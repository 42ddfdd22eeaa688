"""data.fetch: picks the first available source, checks it, installs it, and prints the path last on stdout."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from data import fetch
from data.generate import generate
from tfx_modules.data_gate import dataset


@pytest.fixture(autouse=True)
def no_ambient_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No dataset from the environment, no shared copy, no kaggle CLI, unless a test provides one."""
    monkeypatch.delenv(fetch.DATASET_ENV, raising=False)
    monkeypatch.setattr(fetch, "SHARED_DATASET", tmp_path / "no-shared" / fetch.FILE_NAME)
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))


@pytest.fixture
def batch(tmp_path: Path) -> Path:
    return dataset.write_canonical(generate(200, seed=5), tmp_path / "src" / "loans.csv")


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = fetch.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_source_is_checked_and_copied(batch: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--source", batch, "--dest-dir", tmp_path / "raw")
    target = tmp_path / "raw" / fetch.FILE_NAME
    assert code == 0 and out.splitlines()[-1] == str(target)
    assert target.read_bytes() == batch.read_bytes()
    assert "200 rows" in err and "differs from the known Kaggle copy" in err


def test_environment_variable_is_the_second_choice(
    batch: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(fetch.DATASET_ENV, str(batch))
    code, out, _ = run(capsys, "--dest-dir", tmp_path / "raw")
    assert code == 0 and Path(out.splitlines()[-1]).read_bytes() == batch.read_bytes()


def test_shared_copy_is_found_and_recognised(
    real_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetch, "SHARED_DATASET", real_csv)
    code, out, err = run(capsys, "--dest-dir", tmp_path / "raw", "--or-generate")
    assert code == 0 and out.splitlines()[-1] == str(tmp_path / "raw" / fetch.FILE_NAME)
    assert "32581 rows" in err and "matches the known Kaggle copy" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a,b\n1,2\n", "not the credit-risk dataset: header missing .*'loan_status'.*unexpected \\['a', 'b'\\]"),
        (None, "loans.csv: column 'person_age': text in a numeric column at line 2"),
    ],
)
def test_a_bad_source_fails_and_installs_nothing(
    content: str | None, message: str, batch: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = batch.read_text().splitlines()
    batch.write_text(content or "\n".join([lines[0], "x" + lines[1], *lines[2:]]))
    code, out, err = run(capsys, "--source", batch, "--dest-dir", tmp_path / "raw", "--or-generate")
    assert code == 1 and out == ""
    assert not (tmp_path / "raw").exists()
    assert re.search(message, err), err


def test_missing_source_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--source", tmp_path / "nope.csv", "--or-generate")
    assert code == 1 and out == "" and "nope.csv: no such file" in err


def test_without_any_source_it_explains_how_to_get_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--dest-dir", tmp_path / "raw")
    assert code == 1 and out == ""
    assert "kaggle CLI is not installed" in err and "KAGGLE_USERNAME" in err and "--or-generate" in err


def test_or_generate_writes_real_sized_generated_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--dest-dir", tmp_path / "raw", "--or-generate")
    path = Path(out.splitlines()[-1])
    assert code == 0 and path == tmp_path / "raw" / fetch.GENERATED_NAME
    assert len(dataset.read_batch(path)) == 32_581
    assert "GENERATED data" in err


def _fake_kaggle(tmp_path: Path, body: str) -> None:
    """A stand-in for the Kaggle CLI (no route to kaggle.com here): same command line, local behaviour."""
    exe = tmp_path / "bin" / "kaggle"
    exe.write_text(f"#!{sys.executable}\nimport shutil, sys\nargs = sys.argv[1:]\n{body}\n")
    exe.chmod(0o755)


def test_kaggle_download_is_used_when_nothing_local(
    batch: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake_kaggle(
        tmp_path,
        f"assert args[:3] == ['datasets', 'download', {fetch.KAGGLE_DATASET!r}] and '--unzip' in args\n"
        f"shutil.copy({str(batch)!r}, args[args.index('--path') + 1] + '/{fetch.FILE_NAME}')",
    )
    code, out, _ = run(capsys, "--dest-dir", tmp_path / "raw")
    assert code == 0 and Path(out.splitlines()[-1]).read_bytes() == batch.read_bytes()


def test_kaggle_failure_is_reported_with_the_way_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fake_kaggle(tmp_path, "sys.exit('401 - Unauthorized')")
    code, _, err = run(capsys, "--dest-dir", tmp_path / "raw")
    assert code == 1 and "kaggle download failed: 401 - Unauthorized" in err and "Create New Token" in err
    code, out, err = run(capsys, "--dest-dir", tmp_path / "raw", "--or-generate")
    assert code == 0 and out.strip().endswith(fetch.GENERATED_NAME) and "401" in err
