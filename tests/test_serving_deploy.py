"""The redeploy step with the local backend and a real server (the docker backend: tests/test_docker_stack.py)."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from common.config import settings
from common.records import deploy_record
from serving import client, deploy, process


def put_version(model_dir: Path, version: int, source: Path | None) -> None:
    target = model_dir / str(version)
    if source is None:
        target.mkdir(parents=True)
        (target / "saved_model.pb").write_bytes(b"a model the server cannot load")
    else:
        shutil.copytree(source, target)


def put_nan_version(model_dir: Path, version: int, source: Path) -> None:
    """The real SavedModel behind a `serving_default` whose probabilities are NaN: it loads and warms up, so the
    server reports it AVAILABLE, but its predictions are out of range, which only the smoke prediction can catch.
    (The monotone model keeps its trees in assets and has no float variable left to set to NaN.)"""
    import tensorflow as tf
    import tensorflow_decision_forests  # noqa: F401  (the trees' inference ops)

    real = tf.saved_model.load(str(source))
    serve = real.signatures["serving_default"]
    module = tf.Module()
    module.real = real

    @tf.function
    def nan_serving(**inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs = serve(**inputs)
        return {k: v * float("nan") if v.dtype.is_floating else v for k, v in outputs.items()}

    signature = nan_serving.get_concrete_function(**serve.structured_input_signature[1])
    tf.saved_model.save(module, str(model_dir / str(version)), signatures={"serving_default": signature})


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
    record = deploy_record.read_record(s)
    assert record["live"]["version"] == 1 and record["previous"]["version"] == 2
    assert [e["status"] for e in record["history"]] == ["deployed", "deployed", "rolled_back", "rolled_back"]


def predict_status(url: str) -> tuple[int, dict]:
    """What a client gets from the server now: status code and JSON answer of one prediction."""
    answer = httpx.post(f"{url}/v1/models/credit_risk:predict", json={"instances": [client.example_row()]}, timeout=10)
    return answer.status_code, answer.json()


def assert_serves(url: str, version: int) -> None:
    """`version` is the one AVAILABLE and answers with a probability (NaN fails `0 < p < 1`)."""
    assert live_version(url) == [str(version)]
    code, answer = predict_status(url)
    assert code == 200 and 0.0 < answer["predictions"][0]["probability"] < 1.0, answer


def test_a_first_deploy_that_fails_leaves_nothing_served_and_says_why(home: Path, monkeypatch: pytest.MonkeyPatch):
    s = settings()
    put_version(s.model_dir, 1, None)
    with serve(s.serving_dir, monkeypatch) as url:
        result = deploy.redeploy(backend="local", timeout=60)
        assert (result["status"], result["live"]) == ("failed", None), result
        assert result["message"].startswith("deploying version 1 failed: version 1 failed to load"), result
        assert list(s.serving_dir.iterdir()) == []  # the broken copy is removed: nothing for the poller to retry
        code, answer = predict_status(url)
        assert code == 404 and "Servable not found" in answer["error"]
    record = deploy_record.read_record(s)
    assert (record["live"], record["previous"]) == (None, None)
    assert [(e["status"], e["version"]) for e in record["history"]] == [("failed", 1)]


@pytest.fixture
def live_1_nan_2(trained_model: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A server on which version 1 (the trained model) is deployed and live; version 2, its NaN copy, is blessed
    and waits to be deployed. Yields the server's URL."""
    s = settings()
    source = process.saved_model_dir(trained_model)
    put_version(s.model_dir, 1, source)
    put_nan_version(s.model_dir, 2, source)
    with serve(s.serving_dir, monkeypatch) as url:
        assert deploy.redeploy(version=1, backend="local", timeout=60)["status"] == "deployed"
        yield url


@pytest.mark.slow  # the trained_model fixture runs the TFX pipeline
def test_a_version_that_loads_but_fails_its_smoke_prediction_is_rolled_back(live_1_nan_2: str) -> None:
    s, url = settings(), live_1_nan_2
    result = deploy.redeploy(version=2, backend="local", timeout=60)
    assert (result["status"], result["live"]) == ("rolled_back", 1), result
    message = result["message"]
    assert "smoke prediction on version 2 is out of range" in message and "'probability': nan" in message
    assert message.endswith("; rolled back to version 1")
    assert_serves(url, 1)
    states = {
        st["version"]: st["state"] for st in httpx.get(f"{url}/v1/models/credit_risk").json()["model_version_status"]
    }
    assert states == {"1": "AVAILABLE", "2": "END"}, "version 2 was AVAILABLE before the smoke check refused it"
    assert sorted(p.name for p in s.serving_dir.iterdir()) == ["1"]
    record = deploy_record.read_record(s)
    assert record["live"]["version"] == 1 and record["previous"] is None
    assert [(e["status"], e["version"]) for e in record["history"]] == [("deployed", 1), ("rolled_back", 2)]


@pytest.mark.slow  # the trained_model fixture runs the TFX pipeline
def test_a_rollback_that_fails_too_is_reported_and_nothing_wrong_is_served(live_1_nan_2: str) -> None:
    s, url = settings(), live_1_nan_2
    # The live version's files go bad on disk: it answers from memory until something else replaces it.
    (s.serving_dir / "1" / "saved_model.pb").write_bytes(b"damaged on disk")
    assert_serves(url, 1)

    result = deploy.redeploy(version=2, backend="local", timeout=60)

    assert (result["status"], result["live"]) == ("failed", None), result
    why, _, rollback = result["message"].partition("; rollback to version 1 failed too: ")
    assert why.startswith("deploying version 2 failed: smoke prediction on version 2 is out of range"), why
    assert rollback.startswith("version 1 failed to load"), result["message"]
    code, answer = predict_status(url)  # neither the NaN version nor the damaged one answers
    assert code == 404 and "Servable not found" in answer["error"]
    assert sorted(p.name for p in s.serving_dir.iterdir()) == ["1"]
    record = deploy_record.read_record(s)
    assert record["live"] is None and record["previous"]["version"] == 1
    assert [(e["status"], e["version"]) for e in record["history"]] == [("deployed", 1), ("failed", 2)]


@pytest.mark.slow  # the trained_model fixture runs the TFX pipeline
def test_a_rollback_to_a_version_gone_from_disk_still_takes_the_bad_one_away(live_1_nan_2: str) -> None:
    s, url = settings(), live_1_nan_2
    for folder in (s.serving_dir, s.model_dir):  # version 1 is gone: nothing to roll back to
        shutil.rmtree(folder / "1")

    result = deploy.redeploy(version=2, backend="local", timeout=60)

    assert (result["status"], result["live"]) == ("failed", None), result
    assert "rollback to version 1 failed too: no blessed model version 1" in result["message"]
    assert list(s.serving_dir.iterdir()) == []
    deadline = time.monotonic() + 10 * s.serving_poll_seconds  # the server unloads it at its next poll
    while (answered := predict_status(url))[0] == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    code, answer = answered
    assert code == 404 and "Servable not found" in answer["error"]


@pytest.mark.slow  # the trained_model fixture runs the TFX pipeline
def test_a_rollback_without_a_previous_version_changes_nothing(
    trained_model: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings()
    put_version(s.model_dir, 1, process.saved_model_dir(trained_model))
    with serve(s.serving_dir, monkeypatch) as url:
        assert deploy.rollback(timeout=60) == {
            "status": "failed",
            "live": None,
            "message": "no previous version recorded",
        }
        assert not deploy_record.record_path(s).exists()

        assert deploy.redeploy(backend="local", timeout=60)["status"] == "deployed"
        before = deploy_record.read_record(s)
        result = deploy.rollback(timeout=60)
        assert (result["status"], result["live"], result["message"]) == ("failed", 1, "no previous version recorded")
        assert_serves(url, 1)
        assert sorted(p.name for p in s.serving_dir.iterdir()) == ["1"]
    assert deploy_record.read_record(s) == before
    assert deploy.main(["rollback"]) == 1  # the command line says it failed


def test_an_unknown_backend_is_refused_with_the_choices() -> None:
    with pytest.raises(deploy.DeployError, match="expected docker or local"):
        deploy.make_backend("kubernetes", settings())
