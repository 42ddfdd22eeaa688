"""The redeploy step with the local backend and a real server (the docker backend: tests/test_docker_stack.py)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serving import deploy, process
from tfx_modules.config import settings


def put_version(model_dir: Path, version: int, source: Path | None) -> None:
    target = model_dir / str(version)
    if source is None:
        target.mkdir(parents=True)
        (target / "saved_model.pb").write_bytes(b"a model the server cannot load")
    else:
        shutil.copytree(source, target)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CREDIT_RISK_HOME", str(tmp_path / "home"))
    settings().serving_dir.mkdir(parents=True)
    return tmp_path / "home"


@contextlib.contextmanager
def serve(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real local server over `directory`, which the deploy step then targets."""
    with process.local_server(directory, "--poll-seconds", "0.2") as url:
        monkeypatch.setenv("CREDIT_RISK_SERVING_URL", url)
        yield url


def live_version(url: str) -> list[str]:
    body = httpx.get(f"{url}/v1/models/credit_risk", timeout=10).json()
    return [s["version"] for s in body["model_version_status"] if s["state"] == "AVAILABLE"]


@pytest.mark.slow  # the trained_model fixture runs the TFX pipeline
def test_local_backend_deploys_rolls_back_and_refuses_a_broken_model(
    trained_model: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings()
    source = process.saved_model_dir(trained_model)
    put_version(s.model_dir, 1, source)
    with serve(s.serving_dir, monkeypatch) as url:
        first = deploy.redeploy(backend="local", timeout=60)
        assert (first["status"], first["live"], first["previous"]) == ("deployed", 1, None), first
        put_version(s.model_dir, 2, source)
        second = deploy.redeploy(backend="local", timeout=60)
        assert (second["status"], second["live"], second["previous"]) == ("deployed", 2, 1), second
        assert live_version(url) == ["2"]
        assert deploy.redeploy(backend="local")["status"] == "unchanged"

        back = deploy.rollback(timeout=60)
        assert (back["status"], back["live"]) == ("rolled_back", 1), back
        assert live_version(url) == ["1"]
        assert sorted(p.name for p in s.serving_dir.iterdir()) == ["1"]

        put_version(s.model_dir, 3, None)
        broken = deploy.redeploy(backend="local", timeout=60)
        assert (broken["status"], broken["live"]) == ("rolled_back", 1), broken
        assert "failed to load" in broken["message"]
        assert live_version(url) == ["1"]
        assert not (s.serving_dir / "3").exists()
    record = deploy.read_record(s)
    assert record["live"]["version"] == 1 and record["previous"]["version"] == 2
    assert [e["status"] for e in record["history"]] == ["deployed", "deployed", "rolled_back", "rolled_back"]


def test_an_unknown_backend_is_refused_with_the_choices() -> None:
    with pytest.raises(deploy.DeployError, match="expected docker or local"):
        deploy.make_backend("kubernetes", settings())
