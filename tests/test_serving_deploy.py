"""The redeploy step: real local backend and server; the docker backend against a fake `docker` that records calls."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serving import deploy, process
from tfx_modules.config import PROJECT_ROOT, settings

FAKE_DOCKER = """\
#!{python}
# Records each call; `build` keeps the staged model as the "image", `compose up` swaps the served model for it,
# like a new container would. FAKE_DOCKER_FAIL names a step to fail as "<verb>:<tag>".
import json, os, shutil, sys
from pathlib import Path

args = sys.argv[1:]
state = Path(os.environ["FAKE_DOCKER_STATE"])
tag = os.environ.get("SERVING_TAG") or (args[args.index("-t") + 1].split(":")[-1] if "-t" in args else "")
with (state / "calls.jsonl").open("a") as fh:
    fh.write(json.dumps({{"args": args, "SERVING_TAG": os.environ.get("SERVING_TAG")}}) + "\\n")
verb = "up" if args[:1] == ["compose"] else args[0]
if os.environ.get("FAKE_DOCKER_FAIL") in (verb, f"{{verb}}:{{tag}}"):
    sys.exit(f"fake docker: {{verb}} failed")
if verb == "build":
    ctx = Path(args[-1])
    for name in ("Dockerfile", "models.config", "monitoring.config", "batching.config"):
        assert (ctx / name).is_file(), name
    shutil.rmtree(state / "images" / tag, ignore_errors=True)  # a rebuilt tag replaces the old image
    shutil.copytree(ctx / "model" / tag, state / "images" / tag)
elif verb == "up":
    served = Path(os.environ["FAKE_DOCKER_SERVED"])
    for old in served.iterdir():
        shutil.rmtree(old)
    shutil.copytree(state / "images" / tag, served / ".incoming")
    (served / ".incoming").rename(served / tag)
"""


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


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir, state = tmp_path / "bin", tmp_path / "docker-state"
    bin_dir.mkdir()
    (state / "images").mkdir(parents=True)
    script = bin_dir / "docker"
    script.write_text(textwrap.dedent(FAKE_DOCKER.format(python=sys.executable)))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_STATE", str(state))
    return state


def calls(state: Path) -> list[dict]:
    lines = (state / "calls.jsonl").read_text().splitlines() if (state / "calls.jsonl").exists() else []
    (state / "calls.jsonl").unlink(missing_ok=True)
    return [json.loads(line) for line in lines]


@pytest.mark.slow  # the trained_model fixture runs the TFX pipeline
def test_docker_backend_builds_ups_and_rolls_back_to_the_previous_tag(
    trained_model: Path, home: Path, fake_docker: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings()
    source = process.saved_model_dir(trained_model)
    put_version(s.model_dir, 1, source)
    put_version(s.model_dir, 2, source)
    container = tmp_path / "container-models"
    container.mkdir()
    monkeypatch.setenv("FAKE_DOCKER_SERVED", str(container))
    compose_up = ["compose", "-f", str(PROJECT_ROOT / "docker-compose.yml"), "up", "-d", "--no-deps", "serving"]
    with serve(container, monkeypatch) as url:
        assert isinstance(deploy.make_backend("auto", s), deploy.DockerBackend)
        assert calls(fake_docker) == [{"args": ["info"], "SERVING_TAG": None}]

        first = deploy.redeploy(version=1, backend="docker", timeout=60)
        assert (first["status"], first["live"]) == ("deployed", 1), first
        build, up = calls(fake_docker)
        assert build["args"][:5] == ["build", "--build-arg", "MODEL_VERSION=1", "-t", "credit-risk-serving:1"]
        assert up == {"args": compose_up, "SERVING_TAG": "1"}

        monkeypatch.setenv("FAKE_DOCKER_FAIL", "up:2")
        failed = deploy.redeploy(version=2, backend="docker", timeout=60)
        assert (failed["status"], failed["live"]) == ("rolled_back", 1), failed
        assert "up failed" in failed["message"]
        assert [(c["args"][0], c["SERVING_TAG"]) for c in calls(fake_docker)] == [
            ("build", None),
            ("compose", "2"),
            ("compose", "1"),
        ]
        assert live_version(url) == ["1"]

        monkeypatch.setenv("FAKE_DOCKER_FAIL", "build:2")
        assert deploy.redeploy(version=2, backend="docker", timeout=60)["status"] == "rolled_back"
        assert [c["args"][0] for c in calls(fake_docker)] == ["build", "compose"]

        monkeypatch.delenv("FAKE_DOCKER_FAIL")
        second = deploy.redeploy(version=2, backend="docker", timeout=60)
        assert second["status"] == "deployed", second
        assert live_version(url) == ["2"]
        calls(fake_docker)
        back = deploy.rollback(timeout=60)
        assert (back["status"], back["live"]) == ("rolled_back", 1), back
        assert calls(fake_docker) == [{"args": compose_up, "SERVING_TAG": "1"}]
        assert live_version(url) == ["1"]


def test_auto_backend_is_local_without_a_docker_engine(fake_docker: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_DOCKER_FAIL", "info")
    assert isinstance(deploy.make_backend("auto", settings()), deploy.LocalBackend)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert isinstance(deploy.make_backend("auto", settings()), deploy.LocalBackend)
    with pytest.raises(deploy.DeployError):
        deploy.make_backend("kubernetes", settings())
