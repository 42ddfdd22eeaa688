"""The compose stack on a real Docker engine, air-gapped: images built from a local Debian and PyPI, every service
healthy, the DAG trains inside the stack and the deploy step swaps model containers behind the gateway with no
failed request, a broken model is refused while the old one keeps answering, Prometheus scrapes by service name,
and `down` leaves nothing behind.

The stack binds the compose file's fixed ports on 127.0.0.1 (8080, 8500, 8501, 9090, 9093, 9102): nothing else may use
them while these tests run. One stack serves the module (building and starting it takes minutes).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import tensorflow as tf

from containers import engine, images
from containers.stack import CONTAINER_HOME, Stack
from containers.stack import main as stack_main
from data import generate
from serving import client, grpc_client
from testing import harness
from testing.environment import require
from testing.grpc_calls import GrpcLoad, changed, classify, grpc_answer, grpc_predict, metadata, status
from testing.loadgen import SteadyLoad
from testing.rollout_stack import Traffic

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(3600)]  # a cold image build takes ~15 min

GATEWAY = "http://127.0.0.1:8501"
GATEWAY_GRPC = "127.0.0.1:8500"
PROMETHEUS = "http://127.0.0.1:9090"
UP_BOUND_SECONDS = 300  # measured about 60 s warm (bench/results/compose.json): five times that fails the test
MODELS = f"{CONTAINER_HOME}/models/credit_risk"
ROLLOUT_STATE = f"{CONTAINER_HOME}/rollout/rollout.json"


@contextmanager
def fresh_stack(celery: bool = False) -> Iterator[Stack]:
    """The air-gapped stack built, up from empty volumes within the bound (`up_seconds`), purged and its private
    engine stopped afterwards; when no engine can be started here, a skip (a failure under CI: `require`)."""
    try:
        host = engine.ensure()
    except engine.EngineError as exc:
        require(False, f"no Docker engine can be started here: {exc}")
    started_private = host is not None and host == engine.private().host
    the_stack = Stack(airgap=True, celery=celery)
    try:
        the_stack.build()
        the_stack.down(purge=True)  # a clean slate: no state from an earlier run
        the_stack.up_seconds = the_stack.up(timeout=UP_BOUND_SECONDS)  # type: ignore[attr-defined]
        the_stack.after_up = service_rows(the_stack)  # type: ignore[attr-defined]  # before any test adds models
        yield the_stack
    finally:
        if engine.answers(the_stack.env.get("DOCKER_HOST")):
            the_stack.down(purge=True)
        if started_private:
            engine.stop_private()


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """The module's stack; after its tests, in whatever order they ran, `make compose-down` must leave nothing."""
    with fresh_stack() as the_stack:
        yield the_stack
        assert_compose_down_leaves_no_container_network_or_private_engine(the_stack)


def service_rows(stack: Stack) -> list[dict]:
    return [json.loads(line) for line in stack.compose("ps", "--all", "--format", "json").splitlines() if line]


def services(stack: Stack) -> dict[str, dict]:
    return {row["Service"]: row for row in service_rows(stack)}


def live_version(url: str = GATEWAY) -> int:
    statuses = httpx.get(f"{url}/v1/models/credit_risk", timeout=10).json()["model_version_status"]
    (available,) = [int(s["version"]) for s in statuses if s["state"] == "AVAILABLE"]
    return available


def train(stack: Stack, batch: Path) -> int:
    """The DAG, triggered over REST, trains on generated data and deploys; returns the served version. What served
    right after (`stack.after_training`: live version, the gateway's route, the services, the deploy record) is
    kept, so that tests that deploy other versions may run before the one that checks it."""
    generate.generate(6000, seed=11).to_csv(batch, index=False)
    outcome = stack.run(batch, {})
    assert outcome.startswith("retrained version="), outcome
    stack.after_training = {  # type: ignore[attr-defined]
        "live": live_version(),
        "route": httpx.get(f"{GATEWAY}/gateway/status", timeout=10).json(),
        "services": services(stack),
        "record": stack.deploy("status"),
    }
    return int(outcome.split("=")[1].split()[0])


@pytest.fixture(scope="module")
def trained(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> int:
    return train(stack, tmp_path_factory.mktemp("batch") / "loans.csv")


ONE_SHOTS = {"airflow-init", "alertmanager-config"}
SERVICES = {"postgres", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"}
SERVICES |= {"serving", "statsd-exporter", "prometheus", "alertmanager"} | ONE_SHOTS


def assert_healthy_within_the_bound(stack: Stack, expected: set[str]) -> None:
    """Exactly these services; every one running and healthy (one-shots exited 0), each replica; `up` in the bound.
    As `up` left them, before any test deployed a model container."""
    rows = stack.after_up  # type: ignore[attr-defined]
    assert {row["Service"] for row in rows} == expected, "grafana must not start air-gapped; model slots only later"
    for row in rows:
        if row["Service"] in ONE_SHOTS:
            assert (row["State"], row["ExitCode"]) == ("exited", 0), row
        else:
            assert (row["State"], row["Health"]) == ("running", "healthy"), row
    assert stack.up_seconds < UP_BOUND_SECONDS  # type: ignore[attr-defined]


def test_every_service_is_healthy_within_the_bound(stack: Stack) -> None:
    assert_healthy_within_the_bound(stack, SERVICES)


def test_dag_trains_in_the_stack_and_serves_through_the_gateway(stack: Stack, trained: int) -> None:
    served = stack.after_training  # type: ignore[attr-defined]
    assert served["live"] == trained
    (prediction,) = client.predict(GATEWAY, [client.example_row()])  # whichever version serves now
    assert 0.0 < prediction["probability"] < 1.0 and prediction["label"] in (0, 1)
    route = served["route"]
    assert route["version"] == trained and route["upstream"] == f"http://model-{route['slot']}:8501"
    assert served["services"][f"model-{route['slot']}"]["Image"] == f"credit-risk-serving:{trained}"
    record = served["record"]
    assert (record["live"]["version"], record["live"]["slot"]) == (trained, route["slot"])


def test_second_version_swaps_under_load_without_a_failed_request(stack: Stack, trained: int) -> None:
    """REST and gRPC load through the gateway at once: the deploy's drain waits for both protocols' calls."""
    new = trained + 1
    stack.copy_model(trained, new)
    old_slot = httpx.get(f"{GATEWAY}/gateway/status", timeout=10).json()["slot"]
    body = json.dumps({"instances": [client.example_row()]}).encode()
    with SteadyLoad(GATEWAY, body) as load, GrpcLoad(GATEWAY_GRPC) as grpc_load:
        harness.wait_for(lambda: load.ok >= 20, timeout=30, what="answers before the swap")
        harness.wait_for(lambda: len(grpc_load.versions) >= 20, timeout=30, what="gRPC answers before the swap")
        result = stack.deploy("deploy", "--version", str(new))
        answered_before, grpc_before = load.ok, len(grpc_load.versions)
        harness.wait_for(lambda: load.ok >= answered_before + 20, timeout=30, what="answers after the swap")
        harness.wait_for(lambda: len(grpc_load.versions) >= grpc_before + 20, timeout=30, what="gRPC answers after")
    assert result["status"] == "deployed", result
    assert load.failures == [] and load.ok > 100, (load.ok, load.failures[:5])
    assert grpc_load.failures == [] and len(grpc_load.versions) > 100, grpc_load.failures[:5]
    assert grpc_load.versions[0] != new and grpc_load.versions[-1] == new
    assert live_version() == new
    rows = services(stack)
    assert rows[f"model-{old_slot}"]["State"] == "exited", "the old container is retired after the switch"


GRPC_CASES = {  # through the gateway's 8500 to the live model container's: (call, status code, a fragment)
    "Predict": (grpc_predict(changed()), "OK", "probability"),
    "Classify": (classify, "INVALID_ARGUMENT", "Expected classification signature method_name"),
    "GetModelMetadata": (metadata, "OK", "explain"),
    "GetModelStatus": (status, "OK", "AVAILABLE"),
    "wrong dtype": (
        grpc_predict(changed(loan_amnt=tf.make_tensor_proto(["many"]))),
        "INVALID_ARGUMENT",
        "input 'loan_amnt': expects float32 but string is provided",
    ),
}


@pytest.mark.parametrize("case", list(GRPC_CASES))
def test_grpc_through_the_gateway_answers_as_locally(stack: Stack, trained: int, case: str) -> None:
    """tests/test_serving_grpc.py's matrix, gRPC column, in the compose stack: bad input is INVALID_ARGUMENT."""
    call, code, fragment = GRPC_CASES[case]
    got_code, text = grpc_answer(GATEWAY_GRPC, call)
    assert (got_code, fragment in text) == (code, True), text[:500]


def test_grpc_predictions_are_logged_with_their_application_ids_and_version(stack: Stack, trained: int) -> None:
    """The gateway's prediction log (its volume, read in the gateway's container) holds
    gRPC-served predictions with the ids of the `application-id` metadata and the version that answered."""
    tag = f"grpc-{uuid.uuid4().hex[:8]}-"
    ids = [f"{tag}{i}" for i in range(2)]
    answered = grpc_client.predict(GATEWAY_GRPC, [client.example_row()] * 2, ids=ids, timeout=30)
    live = live_version()

    def in_gateway(command: str) -> str:
        return stack.compose("exec", "-T", "serving", "sh", "-c", command, check=False)

    def logged() -> list[dict]:
        found = in_gateway(f"cat {CONTAINER_HOME}/predictions/predictions-*.jsonl")
        return [json.loads(line) for line in found.splitlines() if tag in line]

    try:
        records = harness.wait_for(lambda: len(logged()) == 2 and logged(), timeout=30, what="the 2 predictions")
    except AssertionError as exc:
        seen = in_gateway(f"ls -la {CONTAINER_HOME}/predictions; tail -c 1500 {CONTAINER_HOME}/predictions/*.jsonl")
        raise AssertionError(f"{exc}\n{seen}\n{stack.compose('logs', '--tail', '40', 'serving', check=False)}") from exc
    assert sorted((r["application_id"], r["version"]) for r in records) == [(i, live) for i in ids]
    assert [r["probability"] for r in sorted(records, key=lambda r: r["application_id"])] == pytest.approx(
        [a["probability"] for a in answered]
    )


def test_model_that_cannot_load_is_refused_and_the_old_one_keeps_answering(stack: Stack, trained: int) -> None:
    live = live_version()
    broken = live + 10
    stack.exec("sh", "-c", f"mkdir -p {MODELS}/{broken} && echo garbage > {MODELS}/{broken}/saved_model.pb")
    body = json.dumps({"instances": [client.example_row()]}).encode()
    with SteadyLoad(GATEWAY, body) as load:
        result = stack.deploy("deploy", "--version", str(broken))
    assert result["status"] == "rolled_back" and f"version {broken} failed to load" in result["message"], result
    assert load.failures == [] and load.ok > 0
    assert live_version() == live
    status = stack.deploy("status")
    assert status["live"]["version"] == live
    assert status["history"][-1]["status"] == "rolled_back" and str(broken) in status["history"][-1]["message"]
    stack.exec("rm", "-rf", f"{MODELS}/{broken}")


def gateway_route() -> dict:
    return httpx.get(f"{GATEWAY}/gateway/status", timeout=10).json()


def test_a_container_up_whose_model_is_never_available_is_stopped_and_the_old_one_keeps_answering(
    stack: Stack, trained: int
) -> None:
    """The new container starts, but its model is not AVAILABLE before the deploy's wait ends (here a 1 s wait:
    the stand-in server alone takes seconds to start): the deploy gives up, stops the container and never moves the
    gateway."""
    live, route = live_version(), gateway_route()
    new = live + 20
    stack.copy_model(live, new)
    call = f"import json; from serving import deploy; print(json.dumps(deploy.redeploy(version={new}, timeout=1)))"
    body = json.dumps({"instances": [client.example_row()]}).encode()
    with SteadyLoad(GATEWAY, body) as load:
        result = json.loads(stack.exec("python", "-c", call, check=False) or "{}")
    assert (result.get("status"), result.get("live")) == ("rolled_back", live), result
    assert f"deploying version {new} failed: version {new} not AVAILABLE after 1s" in result["message"], result
    assert result["message"].endswith(f"rolled back to version {live}")
    assert load.failures == [] and load.ok > 0
    assert live_version() == live and gateway_route()["slot"] == route["slot"]
    idle = "green" if route["slot"] == "blue" else "blue"
    assert services(stack)[f"model-{idle}"]["State"] == "exited", "the container that never served is stopped"
    status = stack.deploy("status")
    assert status["live"]["version"] == live and status["history"][-1]["status"] == "rolled_back"
    stack.exec("rm", "-rf", f"{MODELS}/{new}")


def test_a_rollback_to_a_version_whose_image_is_gone_builds_it_again(stack: Stack, trained: int) -> None:
    """`serving.deploy rollback` when the previous version's image was removed (pruned, or another engine): the
    image is built again from the model files and swapped in with no failed request."""
    record = stack.deploy("status")
    if not record.get("previous"):  # first of the module's deploys: make a second version, to have a previous one
        stack.copy_model(trained, trained + 2)  # not the swap test's trained + 1, which may run after this one
        assert stack.deploy("deploy", "--version", str(trained + 2))["status"] == "deployed"
        record = stack.deploy("status")
    live, previous = record["live"]["version"], record["previous"]["version"]
    tag = f"credit-risk-serving:{previous}"
    images.run(["docker", "rmi", "-f", tag], env=stack.env)
    assert not images.image_exists(tag)
    body = json.dumps({"instances": [client.example_row()]}).encode()
    with SteadyLoad(GATEWAY, body) as load:
        result = stack.deploy("rollback")
    assert (result["status"], result["live"], result["message"]) == ("rolled_back", previous, "manual rollback")
    assert images.image_exists(tag), "the rollback built the image again"
    assert load.failures == [] and load.ok > 0
    assert live_version() == previous and gateway_route()["version"] == previous
    after = stack.deploy("status")
    assert (after["live"]["version"], after["previous"]["version"]) == (previous, live)


def test_a_rollout_over_the_two_model_containers_promotes_a_same_data_model_under_load(
    stack: Stack, trained: int, capfd: pytest.CaptureFixture[str]
) -> None:
    """`make compose-rollout`: the live model again under a new version (the null case) is the challenger in the idle
    container; it passes shadow and the canary steps under traffic of distinct applicants and goes live with no
    failed request; the old container is retired."""
    live, route = live_version(), gateway_route()
    new = live + 30
    stack.copy_model(live, new)
    args = ["--shadow-requests", "200", "--step-requests", "60", "--stage-seconds", "180"]
    with Traffic(GATEWAY, rate=30) as traffic:
        code = stack_main(["rollout", str(new), *args])
        lines = capfd.readouterr().out.strip().splitlines()
        harness.wait_for(lambda: traffic.versions[str(new)] > 10, timeout=60, what="answers from the promoted one")
    assert code == 0 and lines[-1].startswith(f"promoted version {new} ("), lines[-5:]
    assert traffic.failures == [] and traffic.versions[str(live)] > 0
    assert live_version() == new and gateway_route()["slot"] != route["slot"]
    assert services(stack)[f"model-{route['slot']}"]["State"] == "exited", "the old container is retired"
    state = json.loads(stack.exec("cat", ROLLOUT_STATE))
    steps = [("shadow", 0), ("canary", 5), ("canary", 25), ("canary", 100)]
    assert [(h["stage"], h["weight"]) for h in state["history"]] == steps
    assert state["stage"] == "promoted" and state["challenger"] == f"http://model-{gateway_route()['slot']}:8501"


def test_a_compose_rollout_short_of_traffic_is_rolled_back_and_its_container_stopped(
    stack: Stack, trained: int, capfd: pytest.CaptureFixture[str]
) -> None:
    """No traffic: the first canary step ends at its time limit in a rollback that says why, the challenger's
    container is stopped, and the live one never stopped answering."""
    live, route = live_version(), gateway_route()
    new = live + 40
    stack.copy_model(live, new)
    code = stack_main(["rollout", str(new), "--stages", "canary", "--stage-seconds", "10"])
    last = capfd.readouterr().out.strip().splitlines()[-1]
    assert code == 1 and last.startswith(f"rolled back version {new}: too little traffic: "), last
    assert live_version() == live and gateway_route()["slot"] == route["slot"]
    idle = "green" if route["slot"] == "blue" else "blue"
    assert services(stack)[f"model-{idle}"]["State"] == "exited", "the challenger's container is stopped"
    assert json.loads(stack.exec("cat", ROLLOUT_STATE))["stage"] == "rolled_back"
    stack.exec("rm", "-rf", f"{MODELS}/{new}")


def test_prometheus_scrapes_by_service_name_and_airflow_statsd_arrives(stack: Stack, trained: int) -> None:
    def targets() -> dict[str, str]:
        active = httpx.get(f"{PROMETHEUS}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        return {t["labels"]["job"]: t["health"] for t in active}

    jobs = {"serving", "gateway", "statsd", "prometheus", "alertmanager"}
    harness.wait_for(lambda: all(targets().get(j) == "up" for j in jobs), timeout=90, what=f"{jobs} up")
    urls = {t["scrapeUrl"] for t in httpx.get(f"{PROMETHEUS}/api/v1/targets").json()["data"]["activeTargets"]}
    assert {"http://serving:8501/monitoring/prometheus/metrics", "http://statsd-exporter:9102/metrics"} <= urls

    def trainer_finished() -> list:
        labels = 'dag_id="credit_risk_retraining",task_id="retrain__Trainer",state="success"'
        query = f"airflow_task_instance_finished{{{labels}}}"
        return httpx.get(f"{PROMETHEUS}/api/v1/query", params={"query": query}, timeout=10).json()["data"]["result"]

    # the scheduler's StatsD packet for the DAG run's Trainer task, mapped by the exporter, scraped by Prometheus
    harness.wait_for(trainer_finished, timeout=90, what="Airflow's StatsD metric of the Trainer task in Prometheus")


def assert_compose_down_leaves_no_container_network_or_private_engine(stack: Stack) -> None:
    """`make compose-down`; then, on the engine started again, nothing of the project is left to come back. The
    module stack's teardown: a test of its own could run before the others and take their stack down."""
    was_private = engine.private_pid() is not None
    assert stack_main(["down"]) == 0
    if was_private:
        assert engine.private_pid() is None, "the private dockerd must be stopped"
        engine.start_private()
    try:
        project = f"label=com.docker.compose.project={stack.project}"
        assert images.run(["docker", "ps", "-aq", "--filter", project]).split() == []
        assert images.run(["docker", "network", "ls", "-q", "--filter", project]).split() == []
        assert images.run(["docker", "volume", "ls", "-q", "--filter", project]).split() != [], "volumes are kept"
    finally:
        if was_private:
            engine.stop_private()
