"""The StatsD bridge against statsd-exporter's documented behaviour, in process and as its own process."""

from __future__ import annotations

import math
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from common.config import PROJECT_ROOT
from monitoring.statsd_bridge import Bridge, make_http_server, parse_line
from monitoring.statsd_mapper import Mapper, MappingError, escape_metric_name
from testing.harness import free_port, send_statsd, wait_for

MAPPING = PROJECT_ROOT / "monitoring" / "statsd_mapping.yml"


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def exposition(bridge: Bridge, *lines: str) -> str:
    """The bridge's /metrics text after it handled `lines`."""
    for line in lines:
        bridge.handle_line(line)
    return bridge.exposition().decode()


def feed(bridge: Bridge, *lines: str) -> dict[tuple[str, tuple], float]:
    """Sample name and labels -> value after `lines`, read as Prometheus reads the text format (names as written)."""
    out = {}
    for line in exposition(bridge, *lines).splitlines():
        if line and not line.startswith("#"):
            name, labels, value = SAMPLE.match(line).groups()
            out[(name, tuple(sorted(LABEL.findall(labels or ""))))] = float(value)
    return out


@pytest.fixture
def bridge() -> Bridge:
    return Bridge(Mapper.from_file(MAPPING))


def test_airflow_scheduler_metrics_get_labels(bridge: Bridge):
    got = feed(
        bridge,
        "airflow.dagrun.duration.success.credit_risk_retraining:61500|ms",
        "airflow.dagrun.duration.failed.credit_risk_retraining:2000|ms",
        "airflow.ti.finish.credit_risk_retraining.tfx.Trainer.success:1|c",
        "airflow.ti.start.credit_risk_retraining.intake:1|c",
        "airflow.dag.credit_risk_retraining.tfx.Trainer.duration:56000|ms",
        "airflow.scheduler_heartbeat:1|c",
        "airflow.dag_processor_heartbeat:1|c",
    )
    dag = ("dag_id", "credit_risk_retraining")
    assert got[("airflow_dagrun_duration_seconds_sum", (dag, ("state", "success")))] == 61.5
    assert got[("airflow_dagrun_duration_seconds_count", (dag, ("state", "failed")))] == 1
    assert got[("airflow_task_instance_finished", (dag, ("state", "success"), ("task_id", "tfx.Trainer")))] == 1
    assert got[("airflow_task_instance_started", (dag, ("task_id", "intake")))] == 1
    assert got[("airflow_task_duration_seconds_sum", (dag, ("task_id", "tfx.Trainer")))] == 56.0
    assert got[("airflow_component_heartbeat", (("component", "scheduler"),))] == 1
    assert got[("airflow_component_heartbeat", (("component", "dag_processor"),))] == 1


def test_dag_metrics_map_to_labelled_series(bridge: Bridge):
    got = feed(
        bridge,
        "credit_risk.drift.person_income:0.21|g",
        "credit_risk.drift_threshold.person_income:0.1|g",
        "credit_risk.drift_gate.retrain:1|c",
        "credit_risk.drift_gate.retrain:1|c",
        "credit_risk.model.auc:0.91|g",
        "credit_risk.model.version:3|g",
        "credit_risk.model.pushed_timestamp:1700000000|g",
    )
    assert got[("credit_risk_drift", (("feature", "person_income"),))] == 0.21
    assert got[("credit_risk_drift_threshold", (("feature", "person_income"),))] == 0.1
    assert got[("credit_risk_drift_gate_decisions", (("decision", "retrain"),))] == 2
    assert got[("credit_risk_model_metric", (("metric", "auc"),))] == 0.91
    assert got[("credit_risk_model_version", ())] == 3  # the specific rule before `credit_risk.model.*` wins
    assert got[("credit_risk_model_pushed_timestamp_seconds", ())] == 1.7e9


def test_counter_has_no_total_suffix_and_rejects_negative_increments(bridge: Bridge):
    text = exposition(bridge, "jobs.done:2|c", "jobs.done:3|c", "jobs.done:-1|c")
    assert "# TYPE jobs_done counter\njobs_done 5.0\n" in text
    assert 'statsd_exporter_sample_errors_total{reason="illegal_negative_counter"} 1.0' in text


def test_gauges_set_and_move_by_signed_values(bridge: Bridge):
    got = feed(bridge, "queue.size:10|g", "queue.size:+5|g", "queue.size:-3|g")
    assert got[("queue_size", ())] == 12
    assert feed(bridge, "queue.size:4|g")[("queue_size", ())] == 4


def test_timers_are_summaries_in_seconds_with_quantiles(bridge: Bridge):
    got = feed(bridge, *(f"step.time:{ms}|ms" for ms in range(1, 101)))
    assert got[("step_time_count", ())] == 100
    assert got[("step_time_sum", ())] == pytest.approx(5.05)
    assert got[("step_time", (("quantile", "0.5"),))] == pytest.approx(0.05)
    assert got[("step_time", (("quantile", "0.99"),))] == pytest.approx(0.099)
    assert feed(bridge, "size.h:7|h")[("size_h_sum", ())] == 7  # histogram values are not milliseconds


def test_sampling_rate_scales_counters_and_repeats_timings(bridge: Bridge):
    got = feed(bridge, "hits:1|c|@0.1", "lat:100|ms|@0.5")
    assert got[("hits", ())] == pytest.approx(10)
    assert got[("lat_count", ())] == 2 and got[("lat_sum", ())] == pytest.approx(0.2)


def test_multiple_samples_per_line_and_dogstatsd_tags(bridge: Bridge):
    got = feed(bridge, "multi:1|c:2|c", "tagged:1|c|#env:prod,team:risk")
    assert got[("multi", ())] == 3
    assert got[("tagged", (("env", "prod"), ("team", "risk")))] == 1


def test_unmapped_names_escape_like_the_exporter():
    assert escape_metric_name("airflow.ti_failures") == "airflow_ti_failures"
    assert escape_metric_name("a-b.c--d") == "a_b_c_d"
    assert escape_metric_name("1st.metric") == "_1st_metric"


def test_type_conflict_drops_the_later_sample(bridge: Bridge):
    text = exposition(bridge, "dual:1|g", "dual:5|c")
    assert "dual 1.0" in text and 'statsd_exporter_events_conflict_total{type="counter"} 1.0' in text


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("no_value", "malformed_line"),
        ("x:abc|c", "malformed_value"),
        ("x:1|zz", "illegal_event"),
        ("x:1", "malformed_component"),
    ],
)
def test_bad_lines_are_counted_not_fatal(bridge: Bridge, line: str, reason: str):
    text = exposition(bridge, line, "ok:1|c")
    assert f'statsd_exporter_sample_errors_total{{reason="{reason}"}} 1.0' in text
    assert "ok 1.0" in text


def test_glob_rules_win_over_regex_rules_and_earlier_globs_win():
    mapper = Mapper(
        {
            "mappings": [
                {"match": r"^a\.(.*)$", "match_type": "regex", "name": "by_regex", "labels": {"rest": "$1"}},
                {"match": "a.*.c", "name": "first_glob", "labels": {"x": "$1", "y": "${1}_z", "bad": "$2"}},
                {"match": "a.b.*", "name": "second_glob"},
                {"match": "t.*", "match_metric_type": "gauge", "name": "only_gauges"},
            ]
        }
    )
    assert mapper.map("a.b.c", "counter").name == "first_glob"
    assert mapper.map("a.b.c", "counter").labels == {"x": "b", "y": "b_z", "bad": ""}
    assert mapper.map("a.b.d", "counter").name == "second_glob"
    assert mapper.map("a.q.r.s", "counter").labels == {"rest": "q.r.s"}
    assert mapper.map("t.x", "gauge").name == "only_gauges"
    assert mapper.map("t.x", "counter").rule is None


def test_drop_action_and_ttl(bridge: Bridge):
    mapper = Mapper(
        {
            "mappings": [
                {"match": "noisy.*", "name": "x", "action": "drop"},
                {"match": "ttl.*", "name": "t", "ttl": "1ms"},
            ]
        }
    )
    dropping = Bridge(mapper)
    got = feed(dropping, "noisy.a:1|c", "ttl.a:1|g")
    assert not any(name == "x" for name, _ in got)
    assert math.isclose(dropping.families["t"].rule.ttl, 0.001)


def test_a_series_past_its_ttl_leaves_the_metrics_page_and_an_update_brings_it_back():
    """statsd-exporter's `ttl`: a series not updated for that long is no longer exposed; one without a ttl stays."""
    ttl = 3.0  # long enough to read the page first on a loaded machine
    mapper = Mapper(
        {
            "mappings": [
                {"match": "ttl.*", "name": "short_lived", "labels": {"key": "$1"}, "ttl": f"{ttl}s"},
                {"match": "kept.*", "name": "kept", "labels": {"key": "$1"}},
            ]
        }
    )
    bridge = Bridge(mapper)
    server = make_http_server(bridge, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"

    def page() -> str:
        return urllib.request.urlopen(url, timeout=5).read().decode()

    try:
        sent = time.monotonic()
        bridge.handle_line("ttl.a:3|g")
        bridge.handle_line("ttl.b:1|g")
        bridge.handle_line("kept.a:5|g")
        first = page()
        assert 'short_lived{key="a"} 3.0' in first and 'short_lived{key="b"} 1.0' in first
        wait_for(lambda: "short_lived{" not in page(), 10 * ttl, "the short-lived series to expire")
        assert time.monotonic() - sent >= ttl, "a series must not expire before its ttl"
        assert 'kept{key="a"} 5.0' in page()
        bridge.handle_line("ttl.b:2|g")
        again = page()
        assert 'short_lived{key="b"} 2.0' in again and 'short_lived{key="a"}' not in again
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "entry",
    [
        {"match": "a.b", "name": "bad-name"},
        {"match": "a.b*", "name": "ok"},
        {"match": "(", "match_type": "regex", "name": "ok"},
        {"match": "a.b", "name": "ok", "observer_type": "histogram"},
        {"match": "a.b", "name": "ok", "labels": {"bad-label": "x"}},
        {"match": "a.b", "name": "ok", "unknown_option": 1},
    ],
)
def test_invalid_or_unsupported_mappings_are_refused(entry: dict):
    with pytest.raises(MappingError):
        Mapper({"mappings": [entry]})


def test_parse_line_keeps_the_exporters_units():
    (timer,) = parse_line("t:250|ms")
    assert timer.type == "observer" and timer.value == 0.25
    (gauge,) = parse_line("g:-2|g")
    assert gauge.relative and gauge.value == -2


def test_bridge_process_serves_udp_packets_as_metrics():
    udp, http = free_port(socket.SOCK_DGRAM), free_port()
    command = [sys.executable, "-m", "monitoring.statsd_bridge", "--mapping", str(MAPPING)]
    process = subprocess.Popen(
        [*command, "--udp-port", str(udp), "--http-port", str(http)], cwd=PROJECT_ROOT, stderr=subprocess.PIPE
    )
    try:
        url = f"http://127.0.0.1:{http}/metrics"

        def metrics() -> str:
            """The bridge's metrics once they hold the drift gauge just sent, else ""."""
            try:
                send_statsd(udp, ["credit_risk.drift.loan_intent:0.07|g\nairflow.scheduler_heartbeat:1|c"])
                text = urllib.request.urlopen(url, timeout=2).read().decode()
            except OSError:
                return ""
            return text if "credit_risk_drift{" in text else ""

        text = wait_for(metrics, 20, "the bridge to serve metrics")
        assert 'credit_risk_drift{feature="loan_intent"} 0.07' in text
        assert 'airflow_component_heartbeat{component="scheduler"}' in text
    finally:
        process.terminate()
        process.wait(timeout=10)
