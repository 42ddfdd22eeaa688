"""Hot swap as TF Serving does it: a new version answers once loaded; a broken one never replaces the live one."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from serving import client, process
from testing import harness
from testing.fault_drills import publish
from testing.fault_drills import version_states as states
from testing.loadgen import SteadyLoad

pytestmark = pytest.mark.slow  # the trained_model fixture runs the TFX pipeline


def wait_for(check: Callable[[], bool], what: str) -> None:
    harness.wait_for(check, timeout=60.0, what=what, interval=0.1)


def test_new_version_swaps_in_under_load_and_a_broken_one_is_ignored(trained_model: Path, tmp_path: Path) -> None:
    source = process.saved_model_dir(trained_model)
    served = tmp_path / "served"
    served.mkdir()
    publish(source, served / "1")
    body = json.dumps({"instances": [client.example_row()]}).encode()
    with process.local_server(served, "--poll-seconds", "0.2") as url:
        with SteadyLoad(url, body) as load:
            swap_and_refuse_broken(url, served, source, load)
        metrics = httpx.get(f"{url}/monitoring/prometheus/metrics").text

        for version in ("1", "2", "3"):  # every folder gone: the live version is unloaded, as TF Serving does
            shutil.rmtree(served / version)
        wait_for(lambda: states(url)["2"] == ("END", "OK"), "version 2 unloaded")
        gone = httpx.post(f"{url}/v1/models/credit_risk:predict", content=body)
        assert gone.status_code == 404 and "Servable not found" in gone.json()["error"]

    assert load.failures == []
    assert ':tensorflow:serving:model_version{model_name="credit_risk"} 2' in metrics
    broken = served / "3"
    assert f':tensorflow:cc:saved_model:load_attempt_count{{model_path="{broken}",status="fail"}} 1' in metrics


def swap_and_refuse_broken(url: str, served: Path, source: Path, load: SteadyLoad) -> None:
    wait_for(lambda: load.ok >= 5, "the first answers under load")
    publish(source, served / "2")
    wait_for(lambda: states(url) == {"2": ("AVAILABLE", "OK"), "1": ("END", "OK")}, "version 2 swapped in")
    served_before = load.ok
    wait_for(lambda: load.ok >= served_before + 5, "more answers under load")

    broken = served.parent / "broken"  # published whole: a folder seen half-written is retried once it changes
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    publish(broken, served / "3")
    wait_for(lambda: states(url).get("3", ("", ""))[0] == "END", "the broken version 3 to fail loading")
    assert states(url)["3"][1] != "OK"
    assert states(url)["2"] == ("AVAILABLE", "OK")
    served_before = load.ok
    wait_for(lambda: load.ok >= served_before + 5, "more answers under load")
