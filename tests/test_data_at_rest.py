"""Data at rest: what the system writes under CREDIT_RISK_HOME is its owner's only, and the local stack listens on
the loopback interface only.

`make up` (scripts/stack.py, run as `make up` runs it) on free ports in a fresh CREDIT_RISK_HOME: while it runs, after
a DAG run through its scheduler and after `make down`, no file or folder there is readable by group or others
(Airflow's generated admin password file and task logs among them), and every socket of its processes is bound to
127.0.0.1. (After a DAG run: tests/test_dag_runs.py; in
the compose stack's containers: tests/test_private_entrypoint.py.)"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from common import permissions
from common.config import PROJECT_ROOT
from data.generate import generate
from scripts import airflow_local
from testing import airflow_sandbox
from testing.harness import AIRFLOW_PYTHON, free_port, require_tool
from tfx_modules.data_gate import dataset

STACK = PROJECT_ROOT / "scripts" / "stack.py"


def _address(hex_address: str) -> tuple[str, int]:
    """An address of /proc/net/{tcp,udp}[6]: little-endian 32-bit words of hex, then the port."""
    host, port = hex_address.split(":")
    raw = b"".join(bytes.fromhex(host[i : i + 8])[::-1] for i in range(0, len(host), 8))
    return str(ipaddress.ip_address(raw)), int(port, 16)


def _sockets(tables: tuple[str, ...]) -> dict[str, tuple[str, str, int]]:
    """Socket inode -> (table, address, port) for the listening TCP or the bound UDP sockets of `tables`."""
    found = {}
    for table in tables:
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if table.startswith("tcp") and fields[3] != "0A":  # not LISTEN
                continue
            found[fields[9]] = (table, *_address(fields[1]))
    return found


def _session(pid: str) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])


def listeners(sessions: set[int]) -> list[str]:
    """'tcp address:port (pid, command)' for each TCP socket a process of `sessions` listens on."""
    sockets, found = _sockets(("tcp", "tcp6")), []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if _session(proc.name) not in sessions:
                continue
            links = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:80]
        except OSError:
            continue  # gone meanwhile
        for link in links:
            inode = link.removeprefix("socket:[").removesuffix("]")
            if inode in sockets:
                proto, address, port = sockets[inode]
                found.append(f"{proto} {address}:{port} ({proc.name}, {command})")
    return found


def _loopback(listener: str) -> bool:
    address = ipaddress.ip_address(listener.split()[1].rsplit(":", 1)[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


@pytest.fixture(scope="module")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment of `make up` on free ports with a CREDIT_RISK_HOME that does not exist yet (a fresh clone)."""
    for tool in ("prometheus", "prometheus-alertmanager"):
        require_tool(tool)
    home = tmp_path_factory.mktemp("data_at_rest") / "var"
    env = {
        **os.environ,
        "CREDIT_RISK_HOME": str(home),
        "AIRFLOW_HOME": str(home / "airflow"),
        "CREDIT_RISK_SERVING_URL": f"http://127.0.0.1:{free_port()}",
        "CREDIT_RISK_MODEL_SERVER_URL": f"http://127.0.0.1:{free_port()}",
        "CREDIT_RISK_SERVING_GRPC_PORT": str(free_port()),
        "CREDIT_RISK_MODEL_SERVER_GRPC_PORT": str(free_port()),
        "CREDIT_RISK_STATSD_PORT": str(free_port(socket.SOCK_DGRAM)),
        "CREDIT_RISK_STATSD_METRICS_PORT": str(free_port()),
        "CREDIT_RISK_PROMETHEUS_PORT": str(free_port()),
        "CREDIT_RISK_ALERTMANAGER_PORT": str(free_port()),
        "CREDIT_RISK_AIRFLOW_PORT": str(free_port()),
        "CREDIT_RISK_RETRAIN_SCHEDULE": "none",
    }
    env.pop("AIRFLOW__API__HOST", None)
    yield env
    subprocess.run([str(AIRFLOW_PYTHON), str(STACK), "down"], env=env, capture_output=True, timeout=300)


@pytest.mark.slow
def test_make_up_keeps_its_state_private_and_listens_on_loopback_only(stack_env: dict[str, str]) -> None:
    home = Path(stack_env["CREDIT_RISK_HOME"])
    up = subprocess.run(
        [str(AIRFLOW_PYTHON), str(STACK), "up"], env=stack_env, capture_output=True, text=True, timeout=600
    )
    assert up.returncode == 0, up.stdout + up.stderr[-3000:]

    serving = [home / "serving" / f"{name}.pid" for name in ("server", "gateway")]
    pid_files = [*home.glob("monitoring/run/*.pid"), *serving, home / "airflow" / "airflow.pid"]
    sessions = {int(p.read_text()) for p in pid_files}  # each service leads its own session
    assert len(sessions) == 6
    found = listeners(sessions)
    assert len(found) >= 8, found  # the bridge's HTTP, Prometheus, Alertmanager, Airflow's API server, and the
    # model server and the gateway with REST and gRPC each
    assert [f for f in found if not _loopback(f)] == []
    grpc_ports = (stack_env["CREDIT_RISK_SERVING_GRPC_PORT"], stack_env["CREDIT_RISK_MODEL_SERVER_GRPC_PORT"])
    assert all(any(f":{port} (" in f for f in found) for port in grpc_ports), found  # gRPC: tcp6 ::ffff:127.0.0.1
    statsd_port = int(stack_env["CREDIT_RISK_STATSD_PORT"])
    statsd = [address for _, address, port in _sockets(("udp", "udp6")).values() if port == statsd_port]
    assert statsd == ["127.0.0.1"]
    assert (home / "airflow" / "simple_auth_manager_passwords.json.generated").is_file()
    assert permissions.exposed(home) == []

    # A run through the stack's scheduler (as `make run-dag` hands it over) writes batches, reports and task logs.
    batch = dataset.write_canonical(generate(500, seed=5), home.parent / "batch.csv")
    run = airflow_sandbox.run_dag_process(stack_env, batch, {"gate_only": True}, timeout=600)
    lines = run.stdout.strip().splitlines()
    assert lines[-1] == "gate only: would retrain (no model yet)", run.stdout[-3000:] + run.stderr[-3000:]
    # handed to the running Airflow, followed from its page in the UI task by task (`make run` prints the same)
    ui = f"http://localhost:{stack_env['CREDIT_RISK_AIRFLOW_PORT']}"
    assert lines[0] == f"Airflow is up at {ui}: the run goes to it" and "TaskAlreadyRunningError" not in run.stderr
    run_id = lines[1].removeprefix("run ").split(": ")[0]
    assert lines[1] == f"run {run_id}: {ui}/dags/{airflow_local.DAG_ID}/runs/{urllib.parse.quote(run_id, safe='')}"
    followed = {re.sub(r"\[ *\d+s\]", "[t]", re.sub(r"after \d+s", "after Ns", line)) for line in lines[2:]}
    for task in ("intake", "decide", "gate", "no_training", "finish", "retention"):
        assert f"  [t] {task}: success after Ns" in followed, followed
    assert {"  [t] retrain.Trainer: skipped", "  [t] run success"} <= followed
    assert list((home / "airflow" / "logs").rglob("*.log")), "the scheduler's task logs"
    assert permissions.exposed(home) == []

    down = subprocess.run([str(AIRFLOW_PYTHON), str(STACK), "down"], env=stack_env, capture_output=True, timeout=300)
    assert down.returncode == 0
    assert permissions.exposed(home) == []


def test_keep_private_tightens_what_an_older_version_left(tmp_path: Path) -> None:
    """Under an older version's umask (022), whatever this process's umask is when the test starts: an earlier
    in-process keep_private() leaves 077, under which mkdir would already make the folders private."""
    home = tmp_path / "var"
    old_umask = os.umask(0o022)
    try:
        (home / "accepted").mkdir(parents=True, mode=0o755)
        (home / "accepted" / "batch.csv").write_text("rows")
        (home / "accepted" / "batch.csv").chmod(0o644)
        (home / "link").symlink_to("/etc/hostname")
        changed = permissions.keep_private(home)
        assert os.umask(0o022) == permissions.UMASK
    finally:
        os.umask(old_umask)
    assert sorted(changed) == sorted([home, home / "accepted", home / "accepted" / "batch.csv"])
    assert permissions.exposed(home) == []
    assert (home / "accepted" / "batch.csv").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(("host", "log_servers"), [("127.0.0.1", False), ("localhost", False), ("0.0.0.0", True)])
def test_log_servers_run_only_when_airflow_is_exposed(tmp_path: Path, monkeypatch, host: str, log_servers) -> None:
    """They bind every interface whatever Airflow's settings say: on a private stack they do not run at all."""
    monkeypatch.setenv("CREDIT_RISK_HOME", str(tmp_path))
    monkeypatch.setenv("CREDIT_RISK_AIRFLOW_HOST", host)
    commands = airflow_local.components()
    assert airflow_local.environment()["AIRFLOW__API__HOST"] == host
    assert sorted(commands) == ["api-server", "dag-processor", "scheduler", "triggerer"]
    for name in ("scheduler", "triggerer"):
        assert ("--skip-serve-logs" not in commands[name]) == log_servers
