"""The disk filling up while a model is written: a small tmpfs mounted as the model folder (the Pusher's target) and
as the serving folder (the deploy step's). Nothing half-written is left or served, the failure says why, and the
next attempt with space succeeds. Mounting needs root (CAP_SYS_ADMIN): skipped where it is not permitted, a
failure under CI."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from common import config
from common.records import deploy_record
from data.generate import generate
from serving import deploy, process
from testing.environment import require
from testing.fault_drills import answering_version
from tests.conftest import TRAIN_ROWS, run_train
from tfx_modules.data_gate import dataset

pytestmark = [pytest.mark.faults, pytest.mark.slow]  # a TFX pipeline run (and the trained_model fixture's)
QUIET = {"capture_output": True, "text": True, "timeout": 30}


def tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@contextlib.contextmanager
def small_disk(folder: Path, kilobytes: int) -> Iterator[Callable[[int], None]]:
    """`folder` as a tmpfs of `kilobytes`; yields a function that resizes it; unmounted afterwards."""

    def mount(*options: str) -> subprocess.CompletedProcess:
        return subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(folder)], **QUIET)

    folder.mkdir(parents=True, exist_ok=True)
    mounted = mount(f"size={kilobytes}k", "mode=0700")
    require(mounted.returncode == 0, f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield lambda size: subprocess.run(["mount", "-o", f"remount,size={size}k", str(folder)], check=True, **QUIET)
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True, **QUIET)


def test_pusher_on_a_full_disk_leaves_nothing_and_the_next_run_with_space_pushes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    data = dataset.write_canonical(generate(TRAIN_ROWS, seed=7), tmp_path / "train.csv")
    models = home / "models" / config.MODEL_NAME
    with small_disk(models, 256) as resize:  # saved_model.pb alone is about 0.5 MB: it does not fit
        full = run_train(home, data)
        assert full.returncode != 0
        assert "No space left on device" in full.stderr
        assert list(models.iterdir()) == []  # not the truncated version the stock Pusher leaves
        resize(16 * 1024)
        spacious = run_train(home, data)
        assert spacious.returncode == 0, spacious.stderr[-3000:]
        (version,) = models.iterdir()
        assert (version / "saved_model.pb").is_file() and tree_bytes(version) > 256 * 1024


def test_deploy_to_a_full_disk_keeps_the_old_version_and_the_next_deploy_succeeds(
    trained_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDIT_RISK_HOME", str(tmp_path / "home"))
    s = config.settings()
    source = process.saved_model_dir(trained_model)
    for version in (1, 2):
        shutil.copytree(source, s.model_dir / str(version))
    room = tree_bytes(source) * 3 // 2 // 1024  # one version and a half
    with small_disk(s.serving_dir, room) as resize, process.local_server(s.serving_dir) as url:
        monkeypatch.setenv("CREDIT_RISK_SERVING_URL", url)
        monkeypatch.setenv("CREDIT_RISK_DEPLOY_BACKEND", "local")
        assert deploy.redeploy(1, timeout=60)["status"] == "deployed"

        failed = deploy.redeploy(2, timeout=60)
        assert failed["status"] == "rolled_back", failed
        assert "No space left on device" in failed["message"]  # what the deploy task's alert says
        assert answering_version(url) == 1
        assert sorted(p.name for p in s.serving_dir.iterdir()) == ["1"]  # no half-copied staging folder

        resize(room * 3)
        assert deploy.redeploy(2, timeout=60)["status"] == "deployed"
        assert answering_version(url) == 2
    record = json.loads(deploy_record.record_path(s).read_text())
    assert [e["status"] for e in record["history"]] == ["deployed", "rolled_back", "deployed"]
