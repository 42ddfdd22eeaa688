"""Faults of serving: a version folder copied in place (not renamed in whole) and seen half-written; kill -9 of the
model server and of the gateway while a new version is being swapped in. The drills are in
testing/fault_drills.py; bench/faults.py records their figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from serving import client, process
from testing import fault_drills
from testing.fault_drills import publish, version_states
from testing.harness import wait_for
from testing.loadgen import SteadyLoad

pytestmark = [pytest.mark.faults, pytest.mark.slow]  # the trained_model fixture runs the TFX pipeline

MODEL_SERVER_BOUND, GATEWAY_BOUND = fault_drills.BOUNDS["model_server"], fault_drills.BOUNDS["gateway"]


def copy_in_place_until_half_of(source: Path, target: Path, file: str) -> Path:
    """A copy made in place, caught while it writes `file`: everything else whole, `file` half there."""
    shutil.copytree(source, target)
    partial = target / file
    partial.write_bytes((source / file).read_bytes()[: partial.stat().st_size // 2])
    return partial


def test_a_half_copied_version_keeps_the_old_one_serving_and_loads_once_complete(
    trained_model: Path, tmp_path: Path
) -> None:
    source = process.saved_model_dir(trained_model)
    served = tmp_path / "served"
    served.mkdir()
    publish(source, served / "1")
    body = json.dumps({"instances": [client.example_row()]}).encode()
    data = "variables/variables.data-00000-of-00001"
    with process.local_server(served, "--poll-seconds", "0.2") as url, SteadyLoad(url, body) as load:
        wait_for(lambda: load.ok >= 5, 60, "the first answers", interval=0.05)
        partial = copy_in_place_until_half_of(source, served / "2", data)
        wait_for(lambda: version_states(url).get("2", ("",))[0] == "END", 60, "the half-copied version 2 to fail")
        assert version_states(url) == {"2": ("END", "UNKNOWN"), "1": ("AVAILABLE", "OK")}
        metrics = httpx.get(f"{url}/monitoring/prometheus/metrics").text
        served_before = load.ok
        wait_for(lambda: load.ok >= served_before + 5, 60, "answers from version 1 meanwhile", interval=0.05)

        shutil.copyfile(source / data, partial)  # the copy completes
        wait_for(lambda: version_states(url).get("2") == ("AVAILABLE", "OK"), 60, "version 2 once complete")
        assert fault_drills.answering_version(url) == 2
    assert load.failures == []
    failed = f':tensorflow:cc:saved_model:load_attempt_count{{model_path="{served / "2"}",status="fail"}} 1'
    assert failed in metrics
    assert ':tensorflow:serving:model_version{model_name="credit_risk"} 1' in metrics


def test_kill_9_of_the_model_server_during_a_swap(trained_model: Path, tmp_path: Path) -> None:
    found = fault_drills.kill_model_server_during_swap(
        process.saved_model_dir(trained_model), tmp_path, MODEL_SERVER_BOUND
    )
    assert found["answering_again_seconds"] < MODEL_SERVER_BOUND
    assert found["failure_kinds"] == ["HTTP 503"]  # the gateway answers at once and says why, it never hangs
    assert all("Model server unavailable" in f for f in found["failures"])
    assert found["version_after"] == 2  # the restarted server serves the newest whole version
    assert found["states_after"]["2"] == ("AVAILABLE", "OK")


def test_kill_9_of_the_gateway_during_a_swap(trained_model: Path, tmp_path: Path) -> None:
    found = fault_drills.kill_gateway_during_swap(process.saved_model_dir(trained_model), tmp_path, GATEWAY_BOUND)
    assert found["answering_again_seconds"] < GATEWAY_BOUND
    assert set(found["failure_kinds"]) <= {"ConnectError", "RemoteProtocolError", "ReadError"}
    assert found["states_after"]["2"] == ("AVAILABLE", "OK")  # the swap went on behind the dead gateway
