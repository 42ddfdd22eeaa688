"""Faults of the metrics path: kill -9 of the StatsD bridge and of Prometheus in the running local stack. After the
restart (as `make up` does it) new values reach Prometheus within a bound, and Prometheus keeps what it had."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testing import fault_drills
from testing.harness import running_stack

pytestmark = pytest.mark.faults

BRIDGE_BOUND = fault_drills.BOUNDS["statsd_bridge"]  # from the kill until a new value sent to the bridge is scraped
PROMETHEUS_BOUND = fault_drills.BOUNDS["prometheus"]  # the same after Prometheus was killed (its WAL replayed first)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict]:
    with running_stack(tmp_path, "http://127.0.0.1:9") as urls:  # no model server: only the StatsD path matters
        yield urls


def test_kill_9_of_the_statsd_bridge(stack: dict) -> None:
    found = fault_drills.kill_statsd_bridge(stack, BRIDGE_BOUND)
    assert found["metrics_flowing_again_seconds"] < BRIDGE_BOUND


def test_kill_9_of_prometheus_keeps_its_samples(stack: dict) -> None:
    found = fault_drills.kill_prometheus(stack, PROMETHEUS_BOUND)
    assert found["scraping_again_seconds"] < PROMETHEUS_BOUND
    assert found["samples_before_kill"] >= 3
    assert found["samples_kept"] == found["samples_before_kill"]
