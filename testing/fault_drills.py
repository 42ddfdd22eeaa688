"""Fault drills on real running parts: kill -9 a process in the middle of its work, start it again, and measure how
long until it does its job again. The fault tests (tests/test_faults_*.py) assert what must hold and a bound;
bench/faults.py records the figures. Each drill returns its measurements as a dict of numbers and facts.

Recovery is timed from the kill; the restart follows at once (here nothing supervises the processes: in the
compose stack Docker's restart policy does, locally `make up` again), so the figures are what a restart costs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from common.config import MODEL_NAME, PROJECT_ROOT
from monitoring import local_stack
from scripts import airflow_local
from serving import client, process
from testing.harness import dag_alert_connections, get_json, query, send_statsd, wait_for
from testing.loadgen import SteadyLoad

# Seconds from a kill until the part does its job again (the model server imports TensorFlow and loads the model).
BOUNDS = {"model_server": 90.0, "gateway": 15.0, "statsd_bridge": 15.0, "prometheus": 45.0}
POLL_SECONDS = "0.2"  # the model server's folder poll in the drills (1 s by default)
SEND_ALERT = """import json, time
import airflow.providers.slack.hooks.slack_webhook, airflow.providers.smtp.hooks.smtp  # imported before the clock
from dags.alerts import channels as alerts
started = time.monotonic()
used = alerts.send("fault drill", ["x"])
print("SENT", json.dumps({"used": used, "seconds": time.monotonic() - started}))"""


def publish(source: Path, target: Path) -> None:
    """Appear whole, as the deploy step and the Pusher's final rename make versions appear."""
    staging = target.with_name(f".staging-{target.name}")
    shutil.copytree(source, staging)
    staging.rename(target)


def version_states(url: str) -> dict[str, tuple[str, str]]:
    """Version -> (state, error code) as the model server reports them; {} while it does not answer."""
    try:
        body = httpx.get(f"{url}/v1/models/{MODEL_NAME}", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return {}
    return {s["version"]: (s["state"], s["status"]["error_code"]) for s in body.get("model_version_status", [])}


def answering_version(url: str) -> int | None:
    """The model version that answers a predict call at `url` (the local server's header), None on failure."""
    body = json.dumps({"instances": [client.example_row()]})
    try:
        answer = httpx.post(f"{url}/v1/models/{MODEL_NAME}:predict", content=body, timeout=10)
    except httpx.HTTPError:
        return None
    return int(answer.headers["x-model-version"]) if answer.status_code == 200 else None


def kill9(proc: subprocess.Popen | int) -> None:
    """SIGKILL a child process (or a pid) and reap it."""
    pid = proc if isinstance(proc, int) else proc.pid
    os.kill(pid, signal.SIGKILL)
    if isinstance(proc, int):
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:  # not our child: wait until the kernel has removed it
            wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10, f"process {pid} gone", interval=0.05)
    else:
        proc.wait()


def _kill_during_swap(
    load: SteadyLoad,
    served: Path,
    source: Path,
    server_url: str,
    kill: Callable[[], None],
    restart: Callable[[], None],
    bound: float,
) -> dict:
    """Under load: publish version 2, kill while it is LOADING, restart; time until answers flow again."""
    wait_for(lambda: load.ok >= 5, 60, "the first answers under load", interval=0.05)
    publish(source, served / "2")
    wait_for(lambda: version_states(server_url).get("2", ("",))[0] == "LOADING", 60, "version 2 loading", 0.02)
    failed_before = len(load.failures)
    killed = time.monotonic()
    kill()
    wait_for(lambda: len(load.failures) > failed_before, 30, "the clients to see the outage", interval=0.02)
    ok_when_down = load.ok
    restart()
    restarted = time.monotonic()
    wait_for(lambda: load.ok > ok_when_down, bound, "answers again after the restart", interval=0.02)
    answering = time.monotonic()
    outage = load.failures[failed_before:]
    return {
        "restart_seconds": round(restarted - killed, 2),
        "answering_again_seconds": round(answering - killed, 2),
        "failed_requests": len(outage),
        "failure_kinds": sorted({f.split(" (")[0].split(":")[0] for f in outage}),
        "failures": outage[:3],
    }


def kill_model_server_during_swap(source: Path, workdir: Path, bound: float) -> dict:
    """The model server behind the gateway killed while it loads a new version; restarted on its port."""
    served = workdir / "served"
    served.mkdir(parents=True)
    publish(source, served / "1")
    args = ("--model-dir", str(served), "--poll-seconds", POLL_SECONDS)
    server, server_url = process.start_child("serving.server", *args)
    servers = [server]

    def restart() -> None:
        servers.append(process.start_child("serving.server", *args, port=urlsplit(server_url).port)[0])

    body = json.dumps({"instances": [client.example_row()]}).encode()
    try:
        with process.local_gateway(server_url) as gateway, SteadyLoad(gateway, body) as load:
            found = _kill_during_swap(load, served, source, server_url, lambda: kill9(server), restart, bound)
            found["version_after"] = answering_version(gateway)
            found["states_after"] = version_states(server_url)
    finally:
        process.stop_child(servers[-1])
    return found


def kill_gateway_during_swap(source: Path, workdir: Path, bound: float) -> dict:
    """The gateway killed while the model server behind it loads a new version; restarted on its port."""
    served = workdir / "served"
    served.mkdir(parents=True)
    publish(source, served / "1")
    body = json.dumps({"instances": [client.example_row()]}).encode()
    with process.local_server(served, "--poll-seconds", POLL_SECONDS) as server_url:
        args = ("--upstream", server_url, "--no-prediction-log")
        gateway, gateway_url = process.start_child("serving.gateway", *args, startup_timeout=30)
        gateways = [gateway]

        def restart() -> None:
            port = urlsplit(gateway_url).port
            gateways.append(process.start_child("serving.gateway", *args, port=port, startup_timeout=30)[0])

        try:
            with SteadyLoad(gateway_url, body) as load:
                found = _kill_during_swap(load, served, source, server_url, lambda: kill9(gateway), restart, bound)
                wait_for(lambda: answering_version(gateway_url) == 2, 60, "version 2 through the new gateway")
                found["version_after"] = 2
                found["states_after"] = version_states(server_url)
        finally:
            process.stop_child(gateways[-1])
    return found


def _gauge(prometheus: str, value: float) -> bool:
    found = query(prometheus, 'credit_risk_drift{feature="person_income"}')
    return bool(found) and float(found[0]["value"][1]) == value


def _send_until_scraped(stack: dict, value: float, timeout: float) -> None:
    """Send the drift gauge (UDP may drop a packet: again on every check) until Prometheus has this value."""

    def sent_and_scraped() -> bool:
        send_statsd(stack["statsd_port"], [f"credit_risk.drift.person_income:{value}|g"])
        return _gauge(stack["prometheus"], value)

    wait_for(sent_and_scraped, timeout, f"drift gauge {value} in Prometheus", interval=0.1)


def _kill_and_restart(stack: dict, component: str, value: float, bound: float) -> tuple[float, float]:
    """kill -9 of a `make up` component, started again at once as `make up` starts it; seconds from the kill until
    it was started, and until the drift gauge's new `value` reached Prometheus. It waits up to four times `bound`,
    so a slow recovery is measured and the caller's check against `bound` is what fails, with the number."""
    killed = time.monotonic()
    kill9(local_stack.status()[component])
    local_stack.start((component,))
    restarted = time.monotonic()
    _send_until_scraped(stack, value, 4 * bound)
    return round(restarted - killed, 2), round(time.monotonic() - killed, 2)


def kill_statsd_bridge(stack: dict, bound: float) -> dict:
    """The StatsD bridge killed and started again; time until a new value reaches Prometheus."""
    _send_until_scraped(stack, 0.11, 30)
    restart, flowing = _kill_and_restart(stack, "statsd_bridge", 0.22, bound)
    return {"restart_seconds": restart, "metrics_flowing_again_seconds": flowing}


def _samples(prometheus: str, at: float) -> int:
    """How many samples of the drift gauge Prometheus holds for the hour before `at` (Unix time)."""
    promql = 'count_over_time(credit_risk_drift{feature="person_income"}[1h])'
    body = get_json(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql, "time": at}))
    found = body["data"]["result"]
    return int(found[0]["value"][1]) if found else 0


def kill_prometheus(stack: dict, bound: float) -> dict:
    """Prometheus killed; started again on its storage; time until it scrapes again, and how many of the samples
    it had at the kill it still has (its write-ahead log replayed)."""
    _send_until_scraped(stack, 0.33, 30)
    wait_for(lambda: _samples(stack["prometheus"], time.time()) >= 3, 30, "three scrapes of the gauge", interval=0.2)
    at_kill = time.time()
    before = _samples(stack["prometheus"], at_kill)
    restart, scraping = _kill_and_restart(stack, "prometheus", 0.44, bound)
    return {
        "restart_seconds": restart,
        "scraping_again_seconds": scraping,
        "samples_before_kill": before,
        "samples_kept": _samples(stack["prometheus"], at_kill),
    }


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel completes them) and never says a word: a hung mail server."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def send_alert(workdir: Path, timeout: float, attempts: int, smtp: int, webhook: str) -> tuple[list, float, str]:
    """One `alerts.send` in a fresh Airflow-environment process, as a DAG task sends it, to these endpoints with
    these limits: the channels it reached, the seconds the send took, the process's log."""
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(PROJECT_ROOT),
        "AIRFLOW_HOME": str(workdir / "airflow"),
        "CREDIT_RISK_HOME": str(workdir / "home"),
        "CREDIT_RISK_ALERT_TIMEOUT_SECONDS": str(timeout),
        "CREDIT_RISK_ALERT_ATTEMPTS": str(attempts),
        **dag_alert_connections(smtp, webhook),
    }
    python = airflow_local.AIRFLOW.parent / "python"
    result = subprocess.run([str(python), "-c", SEND_ALERT], env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"alerts.send failed: {result.stderr[-3000:]}")
    sent = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("SENT "))[5:])
    return sent["used"], sent["seconds"], result.stdout + result.stderr
