"""The production image's files agree with each other and with what the local server and deploy step assume."""

from __future__ import annotations

import re

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving import app, deploy
from tfx_modules.config import MODEL_NAME

SRC = deploy.SERVING_SRC


def test_models_config_is_a_model_server_config_for_the_baked_in_model() -> None:
    config = text_format.Parse((SRC / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == (MODEL_NAME, f"/models/{MODEL_NAME}", "tensorflow")
    assert model.model_version_policy.latest.num_versions == 1


def test_dockerfile_pins_tf_serving_and_uses_every_staged_file() -> None:
    dockerfile = (SRC / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)
    assert re.fullmatch(r"tensorflow/serving:2\.16\.\d+", base), base
    assert f"COPY model/ /models/{MODEL_NAME}/" in dockerfile
    for name in deploy.IMAGE_FILES[1:]:
        assert name in dockerfile and f"/config/{name}" in dockerfile
        assert (SRC / name).is_file()


def test_monitoring_path_matches_the_local_server() -> None:
    text = (SRC / "monitoring.config").read_text()
    assert re.search(r"enable:\s*true", text)
    assert f'path: "{app.METRICS_PATH}"' in text


def test_batching_allows_the_benchmarked_batch_sizes() -> None:
    text = (SRC / "batching.config").read_text()
    allowed = [int(v) for v in re.findall(r"allowed_batch_sizes:\s*(\d+)", text)]
    (max_batch,) = (int(v) for v in re.findall(r"max_batch_size\s*\{\s*value:\s*(\d+)", text))
    assert allowed == sorted(allowed) and allowed[-1] == max_batch  # TF Serving refuses the file otherwise
