"""The production image's files agree with each other and with what the local server and deploy step assume."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from common.config import MODEL_NAME, settings
from serving import app, deploy, tf_serving, tf_serving_config

SRC = deploy.SERVING_SRC


def test_models_config_is_a_model_server_config_for_the_baked_in_model() -> None:
    config = text_format.Parse((SRC / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == (MODEL_NAME, f"/models/{MODEL_NAME}", "tensorflow")
    assert model.model_version_policy.latest.num_versions == 1


def test_dockerfile_pins_tf_serving_by_default_and_uses_every_staged_file() -> None:
    dockerfile = (SRC / "Dockerfile").read_text()
    assert re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE) == ["${TF_SERVING_IMAGE}"]
    (base,) = re.findall(r"^ARG TF_SERVING_IMAGE=(\S+)", dockerfile, re.MULTILINE)
    assert re.fullmatch(r"tensorflow/serving:2\.16\.\d+", base), base
    assert settings().serving_base_image == base
    assert f"COPY model/ /models/{MODEL_NAME}/" in dockerfile
    for name in deploy.IMAGE_FILES[1:]:
        assert name in dockerfile and f"/config/{name}" in dockerfile
        assert (SRC / name).is_file()


def test_monitoring_path_matches_the_local_server() -> None:
    config = text_format.Parse((SRC / "monitoring.config").read_text(), tf_serving_config.MonitoringConfig())
    assert config.prometheus_config.enable
    assert config.prometheus_config.path == app.METRICS_PATH


def test_batching_allows_the_benchmarked_batch_sizes() -> None:
    params = text_format.Parse((SRC / "batching.config").read_text(), tf_serving_config.BatchingParameters())
    allowed = list(params.allowed_batch_sizes)
    assert allowed == sorted(allowed) and allowed[-1] == params.max_batch_size.value  # TF Serving refuses it otherwise
    assert params.num_batch_threads.value >= 1


def test_the_air_gapped_stand_in_takes_the_images_command_line() -> None:
    """serving/Dockerfile's CMD, parsed as tensorflow_model_server would: the stand-in serves the baked-in model."""
    cmd = re.search(r"^CMD \[(.*?)\]", (SRC / "Dockerfile").read_text(), re.MULTILINE | re.DOTALL)[1]
    argv = [arg.strip().strip('"') for arg in cmd.replace("\\\n", "").split(",")]
    args = [a.replace("/config/", f"{SRC}/") for a in argv]
    parsed, name, base_path = tf_serving.parse(args)
    assert (name, base_path, parsed.rest_api_port) == (MODEL_NAME, Path(f"/models/{MODEL_NAME}"), 8501)
    assert parsed.file_system_poll_wait_seconds == 0 and parsed.enable_batching
    with pytest.raises(SystemExit):
        tf_serving.parse(["--rest_api_port=8501", f"--model_config_file={SRC / 'batching.config'}"])
