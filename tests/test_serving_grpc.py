"""TF Serving's API over REST and gRPC alike, directly and through the gateway, with the pipeline's real model; the
gRPC front door under a route switch, its prediction log; request batching (merged batches, a full queue)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from serving import batching, client, deploy, grpc_client, process
from testing.grpc_calls import (
    GrpcLoad,
    changed,
    classify,
    grpc_answer,
    grpc_predict,
    grpc_ready,
    metadata,
    multi_inference,
    regress,
    status,
    with_spec,
)
from testing.harness import free_port, wait_for

pytestmark = pytest.mark.slow  # the trained_model fixture runs the TFX pipeline

MAX_BODY = 64 * 1024
HTTP_CODES = {200: "OK", 400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 413: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}
Answer = tuple[str, str]  # (status code name, the message or the answer as text)


def copy_model(trained_model: Path, folder: Path, version: int) -> Path:
    shutil.copytree(process.saved_model_dir(trained_model), folder / str(version))
    return folder


def model_server(folder: Path, *args: str) -> tuple[contextlib.AbstractContextManager[str], str]:
    """A model server with gRPC on a free port: its REST context manager and its gRPC address."""
    port = free_port()
    return process.local_server(folder, "--grpc-port", str(port), *args), f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def served(trained_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One model server (batching on, a small message limit) and a gateway in front of it, both protocols."""
    folder = copy_model(trained_model, tmp_path_factory.mktemp("served"), 1)
    server, server_grpc = model_server(folder, "--max-body-bytes", str(MAX_BODY), "--enable-batching")
    gateway_grpc = f"127.0.0.1:{free_port()}"
    with (
        server as rest,
        process.local_gateway(
            rest, "--grpc-upstream", server_grpc, "--grpc-port", gateway_grpc.rsplit(":", 1)[1]
        ) as gateway,
    ):
        yield {
            "direct-rest": rest,
            "direct-grpc": server_grpc,
            "gateway-rest": gateway,
            "gateway-grpc": grpc_ready(gateway_grpc),
        }


def rest_post(path: str, doc: object) -> Callable[[str], httpx.Response]:
    """A POST of `doc` (the bare NaN token allowed, as TF Serving's parser takes it) to `path` on a base URL."""
    return lambda url: httpx.post(f"{url}{path}", content=json.dumps(doc), timeout=30)


def rest_predict(rows: list[dict], **body: object) -> Callable[[str], httpx.Response]:
    return rest_post("/v1/models/credit_risk:predict", {"instances": rows, **body})


def row() -> dict:
    return client.instances([client.example_row()])[0]


BIG = "x" * MAX_BODY
# case -> (REST call on a base URL, gRPC call on a channel, the status code both must answer, a fragment each)
CASES: dict[str, tuple[Callable, Callable, str, str, str]] = {
    "predict": (rest_predict([row()]), grpc_predict(changed()), "OK", "probability", "probability"),
    "explain": (
        rest_predict([row()], signature_name="explain"),
        grpc_predict(with_spec(changed(), "explain")),
        "OK",
        "reasons",
        "reasons",
    ),
    "classify": (
        rest_post("/v1/models/credit_risk:classify", {"examples": [row()]}),
        classify,
        "INVALID_ARGUMENT",
        "Expected classification signature method_name to be tensorflow/serving/classify",
        "Expected classification signature method_name to be tensorflow/serving/classify",
    ),
    "regress": (
        rest_post("/v1/models/credit_risk:regress", {"examples": [row()]}),
        regress,
        "INVALID_ARGUMENT",
        "Expected regression signature method_name to be tensorflow/serving/regress",
        "Expected regression signature method_name to be tensorflow/serving/regress",
    ),
    "multi inference": (  # REST has no MultiInference: its nearest call, :regress, answers the same
        rest_post("/v1/models/credit_risk:regress", {"examples": [row()]}),
        multi_inference,
        "INVALID_ARGUMENT",
        "Expected regression signature method_name to be tensorflow/serving/regress",
        "Expected regression signature method_name to be tensorflow/serving/regress",
    ),
    "metadata": (
        lambda url: httpx.get(f"{url}/v1/models/credit_risk/metadata"),
        metadata,
        "OK",
        "serving_default",
        "explain",
    ),
    "status": (lambda url: httpx.get(f"{url}/v1/models/credit_risk"), status, "OK", "AVAILABLE", "AVAILABLE"),
    "wrong dtype": (
        rest_predict([{**row(), "loan_amnt": "many"}]),
        grpc_predict(changed(loan_amnt=tf.make_tensor_proto(["many"]))),
        "INVALID_ARGUMENT",
        "'loan_amnt' must be a number",
        "input 'loan_amnt': expects float32 but string is provided",
    ),
    "missing input": (
        rest_predict([{k: v for k, v in row().items() if k != "loan_amnt"}]),
        grpc_predict(changed(loan_amnt=None)),
        "INVALID_ARGUMENT",
        "missing required input(s) ['loan_amnt']",
        "Missing but required: {loan_amnt}",
    ),
    "unknown signature": (
        rest_predict([row()], signature_name="nope"),
        grpc_predict(with_spec(changed(), "nope")),
        "INVALID_ARGUMENT",
        'Serving signature name: "nope" not found in signature def',
        'Serving signature name: "nope" not found in signature def',
    ),
    "wrong shape": (
        rest_post("/v1/models/credit_risk:predict", {"inputs": {k: [[v]] for k, v in row().items()}}),
        grpc_predict(changed(loan_amnt=tf.make_tensor_proto([[1000.0]], tf.float32))),
        "INVALID_ARGUMENT",
        "inputs.",
        "input 'loan_amnt' has shape [1, 1]: the signature takes a batch of shape [-1]",
    ),
    "unknown version": (
        rest_post("/v1/models/credit_risk/versions/9:predict", {"instances": [row()]}),
        grpc_predict(with_spec(changed(), version=9)),
        "NOT_FOUND",
        "Servable not found for request: Specific(credit_risk, 9)",
        "Servable not found for request: Specific(credit_risk, 9)",
    ),
    "oversized": (
        rest_predict([{**row(), "loan_grade": BIG}]),
        grpc_predict(changed(loan_grade=tf.make_tensor_proto([BIG]))),
        "RESOURCE_EXHAUSTED",
        f"exceeds the limit of {MAX_BODY} bytes",
        f"vs. {MAX_BODY})",
    ),
}


def answer_of(protocol: str, target: str, case: str) -> Answer:
    rest_call, grpc_call, *_ = CASES[case]
    if protocol == "rest":
        response = rest_call(target)
        return HTTP_CODES[response.status_code], response.text if response.is_success else response.json()["error"]
    return grpc_answer(target, grpc_call)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("protocol", ["rest", "grpc"])
@pytest.mark.parametrize("where", ["direct", "gateway"])
def test_the_api_matrix(served: dict[str, str], where: str, protocol: str, case: str) -> None:
    """Each call answers the same status code over both protocols, directly and through the gateway, with TF
    Serving's kind of message; bad input is never INTERNAL / 5xx."""
    _, _, code, rest_fragment, grpc_fragment = CASES[case]
    got_code, text = answer_of(protocol, served[f"{where}-{protocol}"], case)
    assert got_code == code, text[:500]
    assert (rest_fragment if protocol == "rest" else grpc_fragment) in text


def test_the_grpc_answer_equals_the_rest_answer(served: dict[str, str]) -> None:
    rows = client.generated_rows(5, seed=3)
    over_rest = client.predict(served["gateway-rest"], rows)
    over_grpc = grpc_client.predict(served["gateway-grpc"], rows)
    assert [r["label"] for r in over_grpc] == [r["label"] for r in over_rest]
    assert [r["probability"] for r in over_grpc] == pytest.approx([r["probability"] for r in over_rest], abs=1e-6)


def test_a_reload_config_request_takes_this_servers_model_only(served: dict[str, str]) -> None:
    with grpc.insecure_channel(served["gateway-grpc"]) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        request = model_management_pb2.ReloadConfigRequest()
        request.config.model_config_list.config.add(name="credit_risk")
        assert stub.HandleReloadConfigRequest(request, timeout=30).status.error_code == 0
        request.config.model_config_list.config.add(name="other")
        with pytest.raises(grpc.RpcError) as refused:
            stub.HandleReloadConfigRequest(request, timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "serves exactly one model, credit_risk" in refused.value.details()
    assert "AVAILABLE" in answer_of("grpc", served["gateway-grpc"], "status")[1]  # still serving


def processed_batches(url: str) -> tuple[float, float]:
    """(rows, batches) the model server's batch-size histogram has seen."""
    text = httpx.get(f"{url}/monitoring/prometheus/metrics").text
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith(batching.BATCH_SIZE))
    key = '{signature="serving_default"}'
    rows, batches = (values.get(f"{batching.BATCH_SIZE}_{part}{key}", "0") for part in ("sum", "count"))
    return float(rows), float(batches)


def concurrently(call: Callable[[int], object], clients: int = 32, rounds: int = 3) -> list[object]:
    """`call` from `clients` threads at once, `rounds` times, each round released together."""
    barrier = threading.Barrier(clients)

    def client_loop(i: int) -> list[object]:
        out = []
        for _ in range(rounds):
            barrier.wait(timeout=60)
            out.append(call(i))
        return out

    with ThreadPoolExecutor(max_workers=clients) as pool:
        return [answer for answers in pool.map(client_loop, range(clients)) for answer in answers]


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_concurrent_single_rows_are_merged_into_batches(served: dict[str, str], protocol: str) -> None:
    rows_before, batches_before = processed_batches(served["direct-rest"])
    if protocol == "rest":
        with httpx.Client(base_url=served["direct-rest"], timeout=30) as http:
            body = json.dumps({"instances": [row()]})
            answers = concurrently(lambda i: http.post("/v1/models/credit_risk:predict", content=body).status_code)
        assert answers == [200] * 96
    else:
        with grpc.insecure_channel(served["direct-grpc"]) as channel:
            stub, request = prediction_service_pb2_grpc.PredictionServiceStub(channel), changed()
            answers = concurrently(lambda i: len(stub.Predict(request, timeout=30).outputs))
        assert set(answers) == {2}
    rows_after, batches_after = processed_batches(served["direct-rest"])
    rows, batches = rows_after - rows_before, batches_after - batches_before
    assert rows == 96
    assert batches < 96 / 2, f"96 single-row calls ran as {batches:.0f} batches: hardly merged"


def test_an_overflowing_queue_answers_503_and_unavailable(trained_model: Path, tmp_path: Path) -> None:
    """One batch thread, batches of one row, one batch waiting: 32 clients at once overflow the queue."""
    config = tmp_path / "batching.config"
    config.write_text(
        "max_batch_size { value: 1 }\nbatch_timeout_micros { value: 0 }\n"
        "max_enqueued_batches { value: 1 }\nnum_batch_threads { value: 1 }\n"
    )
    folder = copy_model(trained_model, tmp_path / "model", 1)
    server, address = model_server(folder, "--enable-batching", "--batching-parameters-file", str(config))
    body = json.dumps({"instances": [row()]})
    with server as url, httpx.Client(base_url=url, timeout=30) as http, grpc.insecure_channel(address) as channel:
        stub, request = prediction_service_pb2_grpc.PredictionServiceStub(channel), changed()

        def one(i: int) -> tuple[str, str, str]:
            if i % 2:
                answer = http.post("/v1/models/credit_risk:predict", content=body)
                return "rest", HTTP_CODES[answer.status_code], answer.text
            try:
                stub.Predict(request, timeout=30)
                return "grpc", "OK", ""
            except grpc.RpcError as exc:
                return "grpc", exc.code().name, exc.details()

        answers = concurrently(one, rounds=2)
    assert {code for _, code, _ in answers} == {"OK", "UNAVAILABLE"}, answers[:5]
    refused = [(protocol, text) for protocol, code, text in answers if code == "UNAVAILABLE"]
    assert {protocol for protocol, _ in refused} == {"rest", "grpc"}
    assert all(batching.QUEUE_FULL in text for _, text in refused)


def test_a_route_switch_under_grpc_load_fails_no_call_and_logs_each_prediction(
    trained_model: Path, tmp_path: Path
) -> None:
    """The gRPC front door follows the routes file as REST does: blue (version 1) to green (version 2) under
    continuous load, no failed call; the log holds gRPC predictions with their application ids and versions."""
    blue, blue_grpc = model_server(copy_model(trained_model, tmp_path / "blue", 1))
    green, green_grpc = model_server(copy_model(trained_model, tmp_path / "green", 2))
    routes, log_dir, port = tmp_path / "gateway.json", tmp_path / "predictions", free_port()
    routes.write_text(json.dumps({"upstream": "http://127.0.0.1:1", "grpc_upstream": blue_grpc, "version": 1}))
    with blue, green as green_url:
        args = ("--routes", str(routes), "--grpc-port", str(port), f"--prediction-log={log_dir}")
        with process.local_gateway(green_url, *args), GrpcLoad(grpc_ready(f"127.0.0.1:{port}")) as load:
            wait_for(lambda: len(load.versions) >= 30, timeout=60, what="answers from blue")
            switch = routes.with_suffix(".tmp")
            switch.write_text(json.dumps({"upstream": green_url, "grpc_upstream": green_grpc, "version": 2}))
            switch.replace(routes)
            wait_for(lambda: load.versions[-1] == 2, timeout=10, what="answers from green")
            at_switch = len(load.versions)
            wait_for(lambda: len(load.versions) >= at_switch + 30, timeout=60, what="more answers from green")
            tagged = grpc_client.predict(f"127.0.0.1:{port}", [client.example_row()] * 2, ids=["app-1", "app-2"])
            assert len(tagged) == 2
            time.sleep(1.5)  # the log's writer flushes within a second
    assert load.failures == []
    assert load.versions[0] == 1 and load.versions[-1] == 2
    records = [json.loads(line) for path in sorted(log_dir.iterdir()) for line in path.read_text().splitlines()]
    assert len(records) >= len(load.versions) + 2
    tagged_records = [r for r in records if r["application_id"].startswith("app-")]
    assert sorted((r["application_id"], r["version"]) for r in tagged_records) == [("app-1", 2), ("app-2", 2)]
    assert {r["version"] for r in records} == {1, 2}
    assert all(r["features"]["loan_grade"] == client.example_row()["loan_grade"] for r in records)


def rollout_state(path: Path, challenger: str, challenger_grpc: str, stage: str, weight: int) -> None:
    """A rollout of version 2 as the controller records it, this process standing in for the controller."""
    doc = {
        "id": "grpc-rollout",
        "version": 2,
        "challenger": challenger,
        "challenger_grpc": challenger_grpc,
        "stage": stage,
        "weight": weight,
        "shadow_share": 1.0,
        "controller": {"pid": os.getpid(), "host": socket.gethostname()},
        "history": [],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)


def answered_versions(gateway_rest: str, gateway_grpc: str, calls: int, ids: str) -> list[tuple[str, int]]:
    """(protocol, version) of `calls` one-row predict calls over each protocol through the gateway."""
    out = []
    rest_body = json.dumps({"instances": [{**row(), "application_id": f"{ids}-rest"}]})
    with httpx.Client(base_url=gateway_rest, timeout=30) as http, grpc.insecure_channel(gateway_grpc) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for i in range(calls):
            answer = http.post("/v1/models/credit_risk:predict", content=rest_body)
            assert answer.status_code == 200, answer.text
            out.append(("rest", int(answer.headers["x-model-version"])))
            metadata = ((grpc_client.ID_METADATA, f"{ids}-{i}"),)
            out.append(("grpc", stub.Predict(changed(), timeout=30, metadata=metadata).model_spec.version.value))
    return out


def test_grpc_calls_follow_a_rollout_as_rest_calls_do(trained_model: Path, tmp_path: Path) -> None:
    """Shadow: the champion answers both protocols and each call is mirrored, paired and logged by role; a canary
    at 100%: the challenger answers both; a challenger whose gRPC side is down: every call retried on the champion,
    no client sees a failure, and the gateway rolls the rollout back on the challenger's gRPC errors."""
    champion, champion_grpc = model_server(copy_model(trained_model, tmp_path / "champion", 1))
    challenger, challenger_grpc = model_server(copy_model(trained_model, tmp_path / "challenger", 2))
    state, log_dir, port = tmp_path / "rollout.json", tmp_path / "predictions", free_port()
    with champion as champion_url, challenger as challenger_url:
        args = ("--grpc-upstream", champion_grpc, "--grpc-port", str(port), "--rollout", str(state))
        with process.local_gateway(champion_url, *args, f"--prediction-log={log_dir}") as gateway:
            gateway_grpc = grpc_ready(f"127.0.0.1:{port}")

            def judged() -> dict:
                return httpx.get(f"{gateway}/gateway/rollout", timeout=10).json()

            rollout_state(state, challenger_url, challenger_grpc, "shadow", 0)
            wait_for(lambda: judged()["state"].get("stage") == "shadow", timeout=10, what="the shadow stage")
            assert set(answered_versions(gateway, gateway_grpc, 10, "shadow")) == {("rest", 1), ("grpc", 1)}
            wait_for(lambda: judged()["numbers"]["pairs"] >= 20, timeout=30, what="20 pairs")
            numbers = judged()["numbers"]
            counts = [numbers["pairs"], numbers["champion"]["requests"], numbers["challenger"]["requests"]]
            assert counts == [20, 20, 20]
            assert numbers["challenger"]["errors"] == 0 and numbers["flip_share"] == 0.0

            rollout_state(state, challenger_url, challenger_grpc, "canary", 100)
            wait_for(lambda: judged()["state"].get("stage") == "canary", timeout=10, what="the canary stage")
            assert set(answered_versions(gateway, gateway_grpc, 5, "canary")) == {("rest", 2), ("grpc", 2)}
            assert judged()["numbers"]["challenger"]["requests"] == 10

            down = f"127.0.0.1:{free_port()}"  # the challenger's gRPC side is down
            rollout_state(state, challenger_url, down, "canary", 100)
            wait_for(lambda: judged()["state"].get("challenger_grpc") == down, timeout=10, what="the new state")
            with grpc.insecure_channel(gateway_grpc) as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                retried = [stub.Predict(changed(), timeout=30).model_spec.version.value for _ in range(20)]
            assert retried == [1] * 20  # each failed on the challenger, answered by the champion
            wait_for(lambda: judged()["state"]["stage"] == "rolled_back", timeout=10, what="the rollback")
            ended = judged()["state"]
            assert "error ratio" in ended["reason"] and ended["numbers"]["challenger"]["errors"] >= 3, ended
    records = [json.loads(line) for path in sorted(log_dir.iterdir()) for line in path.read_text().splitlines()]
    shadow = sorted(
        (r["application_id"], r["role"], r["version"], r.get("shadow", False))
        for r in records
        if r["application_id"].startswith("shadow-") and r["application_id"] != "shadow-rest"
    )
    assert shadow == sorted(
        (f"shadow-{i}", role, version, role == "challenger")
        for i in range(10)
        for role, version in (("champion", 1), ("challenger", 2))
    )
    canary = [(r["role"], r["version"]) for r in records if r["application_id"].startswith("canary-")]
    assert canary == [("challenger", 2)] * 10


def test_the_deploy_drain_waits_for_grpc_calls_under_way_on_the_old_server(trained_model: Path, tmp_path: Path) -> None:
    """gRPC calls under way count in the gateway's `in_flight` of the model server's REST URL, the count deploy's
    drain waits on: blue holds every call 0.3 s (its batches wait that long for more rows), so one is under way at
    the switch; once drained, blue is killed (SIGKILL: no grace of its own) under continuous load, no call fails."""
    slow = tmp_path / "slow.config"
    slow.write_text(
        "max_batch_size { value: 64 }\nbatch_timeout_micros { value: 300000 }\n"
        "max_enqueued_batches { value: 8 }\nnum_batch_threads { value: 1 }\n"
    )
    blue_args = ("--grpc-port", "0", "--enable-batching", "--batching-parameters-file", str(slow))
    blue, blue_url = process.start_child(
        "serving.server", "--model-dir", str(copy_model(trained_model, tmp_path / "blue", 1)), *blue_args
    )
    green, green_grpc = model_server(copy_model(trained_model, tmp_path / "green", 2))
    routes, port = tmp_path / "gateway.json", free_port()
    blue_route = {"upstream": blue_url, "grpc_upstream": process.grpc_address(blue_url), "version": 1}
    routes.write_text(json.dumps(blue_route))
    gateway_args = ("--routes", str(routes), "--grpc-port", str(port))
    try:
        with (
            green as green_url,
            process.local_gateway(green_url, *gateway_args) as gateway,
            GrpcLoad(grpc_ready(f"127.0.0.1:{port}")) as load,
        ):
            busy = wait_for(lambda: deploy.gateway_status(gateway)["in_flight"], timeout=30, what="a call under way")
            assert busy == {blue_url: 1}  # counted by blue's REST URL, not by its gRPC address
            switch = routes.with_suffix(".tmp")
            switch.write_text(json.dumps({"upstream": green_url, "grpc_upstream": green_grpc, "version": 2}))
            switch.replace(routes)
            wait_for(lambda: deploy.gateway_status(gateway)["upstream"] == green_url, timeout=10, what="the switch")
            started = time.monotonic()
            assert deploy.drain(gateway, blue_url)
            drained_in = time.monotonic() - started
            blue.kill()
            blue.wait()
            at_kill = len(load.versions)
            wait_for(lambda: len(load.versions) >= at_kill + 30, timeout=60, what="answers from green")
    finally:
        process.stop_child(blue)
    assert load.failures == []
    assert drained_in < 5.0  # one call of 0.3 s was under way: not deploy.DRAIN_SECONDS (10 s)
    assert load.versions[0] == 1 and set(load.versions[at_kill:]) == {2}
