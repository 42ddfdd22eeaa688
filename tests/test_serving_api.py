"""The local server against TF Serving's REST contract, with the pipeline's real model, over real HTTP."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from common import features
from serving import client, process
from tfx_modules.evaluation import saved_model

pytestmark = pytest.mark.slow  # the trained_model fixture runs the TFX pipeline

MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def model_dir(trained_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    served = tmp_path_factory.mktemp("served")
    shutil.copytree(process.saved_model_dir(trained_model), served / "1")
    return served


@pytest.fixture(scope="module")
def url(model_dir: Path):
    with process.local_server(model_dir, "--max-body-bytes", str(MAX_BODY)) as base:
        yield base


@pytest.fixture(scope="module")
def http(url: str):
    with httpx.Client(base_url=url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return client.generated_rows(20, seed=7)


@pytest.fixture(scope="module")
def in_process(model_dir: Path):
    """The same SavedModel called directly: what the server's answers must equal."""
    fn = saved_model.load(model_dir / "1").signatures["serving_default"]

    def call(rows: list[dict]) -> dict[str, np.ndarray]:
        cols = {}
        for f in features.FEATURES:
            values = [r.get(f.name) for r in rows]
            if f.categorical:
                cols[f.name] = tf.constant(values)
            else:
                cols[f.name] = tf.constant([math.nan if v is None else v for v in values], tf.float32)
        return {k: v.numpy() for k, v in fn(**cols).items()}

    return call


def predict(http: httpx.Client, body: object, path: str = "/v1/models/credit_risk:predict") -> httpx.Response:
    return http.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})


def test_status_is_tf_servings_get_model_status(http: httpx.Client) -> None:
    for path in ("/v1/models/credit_risk", "/v1/models/credit_risk/versions/1"):
        r = http.get(path)
        assert r.status_code == 200
        status = json_format.ParseDict(r.json(), get_model_status_pb2.GetModelStatusResponse())
        (only,) = status.model_version_status
        assert only.version == 1 and only.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE


def test_metadata_describes_the_raw_feature_signature(http: httpx.Client) -> None:
    r = http.get("/v1/models/credit_risk/metadata")
    assert r.status_code == 200
    body = r.json()
    assert body["model_spec"] == {"name": "credit_risk", "signature_name": "", "version": "1"}
    sigs = json_format.ParseDict(body["metadata"]["signature_def"], get_model_metadata_pb2.SignatureDefMap())
    default = sigs.signature_def["serving_default"]
    assert set(default.inputs) == set(features.FEATURE_NAMES)
    for f in features.FEATURES:
        assert default.inputs[f.name].dtype == (tf.string if f.categorical else tf.float32).as_datatype_enum
    assert {"probability", "label"} <= set(default.outputs)


def test_row_and_columnar_predictions_equal_the_in_process_call(http: httpx.Client, rows, in_process) -> None:
    expected = in_process(rows)
    sent = client.instances(rows)
    by_row = predict(http, {"instances": sent})
    assert by_row.status_code == 200, by_row.text
    predictions = by_row.json()["predictions"]
    assert [set(p) for p in predictions] == [{"probability", "label"}] * len(rows)
    np.testing.assert_allclose([p["probability"] for p in predictions], expected["probability"], rtol=1e-6)
    assert [p["label"] for p in predictions] == expected["label"].tolist()

    columns = {name: [r[name] for r in sent] for name in features.FEATURE_NAMES}
    by_column = predict(http, {"inputs": columns})
    assert by_column.status_code == 200, by_column.text
    outputs = by_column.json()["outputs"]
    np.testing.assert_allclose(outputs["probability"], expected["probability"], rtol=1e-6)
    assert outputs["label"] == expected["label"].tolist()


def test_missing_optional_features_whole_floats_and_ints_are_equivalent(http: httpx.Client) -> None:
    base = client.example_row()
    variants = [
        {**base, "person_emp_length": None, "loan_int_rate": None},
        {k: v for k, v in base.items() if k not in features.OPTIONAL},
        {**base, "person_emp_length": math.nan, "loan_int_rate": math.nan},
        {**base, "person_age": int(base["person_age"]), "loan_amnt": int(base["loan_amnt"])},
    ]
    r = predict(http, {"instances": variants})
    assert r.status_code == 200, r.text
    assert len({p["probability"] for p in r.json()["predictions"]}) == 1
    with_values = predict(http, {"instances": [{**base, "person_emp_length": 30.0, "loan_int_rate": 23.0}]})
    assert with_values.json()["predictions"][0]["probability"] != r.json()["predictions"][0]["probability"]


def _bad_requests() -> list[tuple[str, object, int]]:
    row = client.example_row()
    no_age = {k: v for k, v in row.items() if k != "person_age"}
    return [
        ("malformed json", b'{"instances": [', 400),
        ("not an object", [row], 400),
        ("neither key", {"rows": [row]}, 400),
        ("both keys", {"instances": [row], "inputs": {}}, 400),
        ("missing required feature", {"instances": [no_age]}, 400),
        ("wrong type for age", {"instances": [{**row, "person_age": "abc"}]}, 400),
        ("bool for age", {"instances": [{**row, "person_age": True}]}, 400),
        ("null where not allowed", {"instances": [{**row, "loan_grade": None}]}, 400),
        ("null numeric required", {"instances": [{**row, "person_income": None}]}, 400),
        ("unknown feature", {"instances": [{**row, "zodiac": "leo"}]}, 400),
        ("label sent as a feature", {"instances": [{**row, features.LABEL: 1}]}, 400),
        ("empty instances", {"instances": []}, 400),
        ("empty columns", {"inputs": {k: [] for k in row}}, 400),
        ("ragged columns", {"inputs": {**{k: [v] for k, v in row.items()}, "person_age": [30.0, 31.0]}}, 400),
        ("huge number", b'{"instances": [{"person_age": 1e999}]}', 400),
        ("unknown signature", {"signature_name": "nope", "instances": [row]}, 400),
    ]


@pytest.mark.parametrize(("case", "body", "code"), _bad_requests(), ids=[c[0] for c in _bad_requests()])
def test_bad_input_gets_a_tf_serving_style_4xx(http: httpx.Client, case: str, body: object, code: int) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body)
    r = http.post("/v1/models/credit_risk:predict", content=content)
    assert r.status_code == code, r.text
    assert set(r.json()) == {"error"} and r.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("POST", "/v1/models/other:predict", 404),
        ("POST", "/v1/models/credit_risk/versions/9:predict", 404),
        ("GET", "/v1/models/other", 404),
        ("GET", "/v1/models/credit_risk/versions/9", 404),
        ("GET", "/v1/models/credit_risk/versions/9/metadata", 404),
        ("POST", "/v1/models/credit_risk:classify", 400),
        ("GET", "/v1/models/credit_risk:predict", 400),
        ("GET", "/v1/models/credit_risk/versions/x", 400),
        ("DELETE", "/v1/models/credit_risk", 405),
        ("GET", "/elsewhere", 404),
    ],
)
def test_unknown_model_version_or_path_gets_a_json_4xx(http: httpx.Client, method: str, path: str, code: int) -> None:
    r = http.request(method, path, content=json.dumps({"instances": [client.example_row()]}))
    assert r.status_code == code, r.text
    assert "error" in r.json()


def test_oversized_bodies_are_refused_with_or_without_a_length(http: httpx.Client) -> None:
    big = json.dumps({"instances": [client.example_row()] * 1000}).encode()
    assert len(big) > MAX_BODY
    declared = http.post("/v1/models/credit_risk:predict", content=big)
    assert declared.status_code == 413 and "limit" in declared.json()["error"]
    chunked = http.post("/v1/models/credit_risk:predict", content=(big[i : i + 4096] for i in range(0, len(big), 4096)))
    assert chunked.status_code == 413 and "limit" in chunked.json()["error"]
    assert predict(http, {"instances": [client.example_row()]}).status_code == 200


def test_prometheus_metrics_use_tf_servings_names(http: httpx.Client) -> None:
    predict(http, {"instances": [client.example_row()]})
    predict(http, {"instances": []})
    text = http.get("/monitoring/prometheus/metrics").text
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert ':tensorflow:serving:request_count{model_name="credit_risk",status="OK"}' in text
    assert ':tensorflow:serving:request_count{model_name="credit_risk",status="INVALID_ARGUMENT"}' in text
    labels = 'model_name="credit_risk",API="predict",entrypoint="REST"'
    assert f':tensorflow:serving:request_latency_bucket{{{labels},le="+Inf"}}' in text
    assert f":tensorflow:serving:request_latency_count{{{labels}}}" in text
    assert ':tensorflow:serving:model_version{model_name="credit_risk"} 1' in text
    assert ':tensorflow:cc:saved_model:load_attempt_count{model_path="' in text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
feature_values = st.one_of(json_values, st.sampled_from(["RENT", "A", "N", "EDUCATION", "", "abc"]))


@st.composite
def mutated_rows(draw: st.DrawFn) -> dict:
    row = dict(client.example_row())
    for name in draw(st.lists(st.sampled_from(features.FEATURE_NAMES), max_size=3, unique=True)):
        if draw(st.booleans()):
            row[name] = draw(feature_values)
        else:
            row.pop(name)
    return row


bodies = st.one_of(
    json_values,
    st.builds(lambda rows: {"instances": rows}, st.lists(mutated_rows(), max_size=3)),
    st.builds(
        lambda rows: {"inputs": {k: [r.get(k) for r in rows] for k in features.FEATURE_NAMES}},
        st.lists(mutated_rows(), max_size=3),
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_fuzzed_bodies_never_get_a_5xx(http: httpx.Client, body: object) -> None:
    r = predict(http, body)
    assert r.status_code in (200, 400), r.text
    answer = r.json()
    if r.status_code == 200:
        assert_well_formed(body, answer)
    else:
        assert set(answer) == {"error"} and answer["error"]


def assert_well_formed(body: dict, answer: dict) -> None:
    """One prediction per row sent, in the format sent, each a probability in [0, 1] and its 0/1 label."""
    if "instances" in body:
        rows = answer["predictions"]
        assert len(rows) == len(body["instances"])
        pairs = [(row["probability"], row["label"]) for row in rows]
    else:
        columns = answer["outputs"]
        assert len(columns["probability"]) == len(columns["label"]) == len(next(iter(body["inputs"].values())))
        pairs = list(zip(columns["probability"], columns["label"], strict=True))
    assert pairs and all(0.0 <= p <= 1.0 and label in (0, 1) for p, label in pairs)
