"""The serving dashboard against the real local model server: after some predictions (and some bad requests),
every panel's query returns data from the live local Prometheus."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from serving import client, process
from testing.harness import assert_panels_return_data, dashboard, query, running_stack, send_statsd


@pytest.mark.slow
def test_every_serving_panel_returns_data(trained_model: Path, tmp_path: Path):
    served = tmp_path / "served"
    shutil.copytree(process.saved_model_dir(trained_model), served / "1")
    with process.local_server(served) as serving_url, running_stack(tmp_path / "home", serving_url) as stack:
        for _ in range(20):
            client.predict(serving_url, [client.example_row()])
        with pytest.raises(client.ServingError, match="HTTP 400"):
            client.request(f"{serving_url}/v1/models/credit_risk:predict", {"instances": [{"person_age": "abc"}]})
        send_statsd(stack["statsd_port"], ["credit_risk.model.version:1|g"])
        assert_panels_return_data(stack["prometheus"], dashboard("serving"))
        (version,) = query(stack["prometheus"], ':tensorflow:serving:model_version{model_name="credit_risk"}')
        assert version["value"][1] == "1"
