"""The compose stack's `celery` profile on a real Docker engine, air-gapped (`make compose-run AIRGAP=1 CELERY=1`):
Redis and two airflow-worker replicas come up healthy beside the rest, a retraining DAG run triggered over REST runs
every task on the worker containers (none in the scheduler), succeeds, and its deploy step, run by a worker through
the engine's socket, puts the model behind the gateway.

Same fixed ports and one stack per module as tests/test_docker_stack.py (run the two modules one after the other,
never at once): one DAG run serves every test here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from containers.stack import Stack
from serving import client
from tests.test_docker_stack import GATEWAY, SERVICES, assert_healthy_within_the_bound, fresh_stack, live_version, train

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(3600)]

WORKERS = 2  # CELERY_WORKERS' default in docker-compose.yml


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with fresh_stack(celery=True) as the_stack:
        yield the_stack


@pytest.fixture(scope="module")
def trained(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> int:
    return train(stack, tmp_path_factory.mktemp("batch") / "loans.csv")


def test_redis_and_both_workers_are_healthy_within_the_bound(stack: Stack) -> None:
    assert_healthy_within_the_bound(stack, SERVICES | {"redis", "airflow-worker"})
    assert len(stack.hostnames("airflow-worker")) == WORKERS


def test_the_run_ran_on_the_workers_and_deployed(stack: Stack, trained: int) -> None:
    hosts, workers = stack.task_hosts(), stack.hostnames("airflow-worker")
    assert {"intake", "retrain.Trainer", "retrain.deploy"} <= set(hosts), hosts
    assert set(hosts.values()) <= workers, f"tasks ran off the workers {workers}: {hosts}"
    assert not set(hosts.values()) & stack.hostnames("airflow-scheduler")
    assert live_version() == trained
    (prediction,) = client.predict(GATEWAY, [client.example_row()])
    assert 0.0 < prediction["probability"] < 1.0
    assert stack.deploy("status")["live"]["version"] == trained
