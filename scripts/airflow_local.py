"""Airflow on this machine: `up` (api-server/UI, scheduler, dag-processor), `down`, `run-dag` and `run-monitor`.

    python scripts/airflow_local.py up         # prints the URL and the login
    python scripts/airflow_local.py down
    python scripts/airflow_local.py run-dag [BATCH] [--conf JSON]   # last line: the run's outcome
    python scripts/airflow_local.py run-monitor [--conf JSON]       # one live-monitoring run; last line its outcome

Everything lives under settings().airflow_home (AIRFLOW_HOME, under CREDIT_RISK_HOME) with the committed
airflow.cfg (AIRFLOW_CONFIG). `up` runs `airflow standalone` in its own session so `down` can stop it with SIGINT
(SIGTERM would orphan its children). The admin password is CREDIT_RISK_AIRFLOW_PASSWORD when set, else the one
Airflow generates. `start()`/`stop()` are the functions a combined `make up` calls; `sandbox()` and
`run_dag_process()` are how tests and the benchmark run the DAG apart from this machine's state. Standard library
only (`sandbox()` starts the model server, which needs the ML environment).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tfx_modules.config import MODEL_NAME, PROJECT_ROOT, settings

DAG_ID = "credit_risk_retraining"
MONITOR_DAG_ID = "credit_risk_monitoring"
AIRFLOW = PROJECT_ROOT / ".venvs" / "airflow" / "bin" / "airflow"
PASSWORD_ENV = "CREDIT_RISK_AIRFLOW_PASSWORD"
USER = "admin"


def _secret(name: str) -> str:
    """A random secret kept (0600) in AIRFLOW_HOME: the same for every process of this Airflow, across restarts."""
    path = settings().airflow_home / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path.read_text()


def environment() -> dict[str, str]:
    """The environment every Airflow process of this project runs with.

    Airflow generates a missing JWT secret and API secret key per process, so the scheduler's task tokens would fail
    the api-server's check ("Invalid auth token"): both come from AIRFLOW_HOME unless the environment sets them."""
    config = settings()
    return {
        "AIRFLOW__API_AUTH__JWT_SECRET": _secret("jwt_secret"),
        "AIRFLOW__API__SECRET_KEY": _secret("api_secret_key"),
        **os.environ,
        "AIRFLOW_HOME": str(config.airflow_home),
        "AIRFLOW_CONFIG": str(PROJECT_ROOT / "airflow.cfg"),
        "CREDIT_RISK_HOME": str(config.home),
        "CREDIT_RISK_PROJECT_ROOT": str(PROJECT_ROOT),
        "CREDIT_RISK_STATSD_HOST": config.statsd_host,
        "CREDIT_RISK_STATSD_PORT": str(config.statsd_port),
        "AIRFLOW__API__PORT": str(config.airflow_port),
        "AIRFLOW__API__BASE_URL": config.airflow_url,
        "AIRFLOW__CORE__PARALLELISM": "2",
        "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p),
        "PATH": os.pathsep.join(p for p in (str(AIRFLOW.parent), os.environ.get("PATH")) if p),  # standalone's children
        "TF_USE_LEGACY_KERAS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def _airflow(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(AIRFLOW), *args], env=environment(), check=True, **kwargs)


def migrate(force: bool = False) -> None:
    """Create or upgrade Airflow's database (SQLite in AIRFLOW_HOME); once, unless `force` (a stamp remembers)."""
    stamp = settings().airflow_home / ".migrated"
    stamp.parent.mkdir(parents=True, exist_ok=True)
    if force or not stamp.exists():
        _airflow("db", "migrate", stdout=subprocess.DEVNULL)
        stamp.touch()


def _pid_file() -> Path:
    return settings().airflow_home / "standalone.pid"


def running() -> int | None:
    """The pid of the `airflow standalone` that `start()` started (also its session id), if it still runs."""
    try:
        pid = int(_pid_file().read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    """Whether `pid` runs; reaps it first when it is this process's exited child (a zombie answers kill(pid, 0))."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _group_gone(pgid: int, timeout: float) -> bool:
    """Wait until no process of the group `pgid` (the session `start` made) is left."""
    deadline = time.monotonic() + timeout
    while _alive(pgid) or _signal_group(pgid, 0):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def _default_sigint() -> None:
    """In the child before exec: a SIGINT ignored by the launching shell (`cmd &`) would be inherited and would make
    `stop()`'s SIGINT powerless."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _passwords_file() -> Path:
    return settings().airflow_home / "simple_auth_manager_passwords.json.generated"


def _wait_healthy(timeout: float) -> None:
    url = settings().airflow_url
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if running() is None:
            raise RuntimeError(f"airflow standalone exited; see {settings().airflow_home / 'standalone.log'}")
        time.sleep(2)
    raise TimeoutError(f"Airflow not healthy at {url} after {timeout:.0f}s")


def start(timeout: float = 180) -> str:
    """Start Airflow unless it runs; return the login line."""
    if running() is None:
        migrate(force=True)
        password = os.environ.get(PASSWORD_ENV)
        if password:
            _passwords_file().write_text(json.dumps({USER: password}))
            _passwords_file().chmod(0o600)
        log = (settings().airflow_home / "standalone.log").open("ab")
        process = subprocess.Popen(
            [str(AIRFLOW), "standalone"],
            env=environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_default_sigint,
        )
        _pid_file().write_text(str(process.pid))
    _wait_healthy(timeout)
    password = json.loads(_passwords_file().read_text()).get(USER, "?")
    return f"Airflow UI: {settings().airflow_url} (user {USER}, password {password}); DAG {DAG_ID} is unpaused"


def stop(timeout: float = 60) -> bool:
    """SIGINT to `airflow standalone` (it stops its children); whatever of its session is left after `timeout` gets
    SIGTERM, then SIGKILL. Returns once the whole session is gone; False when nothing ran."""
    pid = running()
    if pid is None:
        return False
    os.kill(pid, signal.SIGINT)
    for wait, escalation in ((timeout, signal.SIGTERM), (20, signal.SIGKILL), (10, None)):
        if _group_gone(pid, wait) or escalation is None:
            break
        _signal_group(pid, escalation)
    _pid_file().unlink(missing_ok=True)
    return True


def _deliver(batch: Path) -> str:
    """Copy a batch into the incoming folder atomically (the DAG never sees half a file); return its name."""
    incoming = settings().incoming_dir
    incoming.mkdir(parents=True, exist_ok=True)
    partial = incoming / f".{batch.name}.partial"
    shutil.copyfile(batch, partial)
    partial.replace(incoming / batch.name)
    return batch.name


def _last_run(dag_id: str) -> Path:
    """Where a DAG's runs leave their outcome: the retraining DAG's state, the live monitor's."""
    return (
        settings().live_state_dir / "last_run.json"
        if dag_id == MONITOR_DAG_ID
        else settings().state_dir / "last_run.json"
    )


def _dags_test(dag_id: str, conf: dict) -> str:
    """One whole run of `dag_id` with `airflow dags test`; returns the outcome the run recorded."""
    migrate()
    started = time.time()
    result = subprocess.run([str(AIRFLOW), "dags", "test", dag_id, "-c", json.dumps(conf)], env=environment())
    last_run = _last_run(dag_id)
    record = json.loads(last_run.read_text()) if last_run.exists() else {}
    if result.returncode != 0 or record.get("time", 0) < started:
        raise RuntimeError(f"the DAG run failed (exit code {result.returncode}); see the task logs above")
    return record["outcome"]


def run_dag(batch: Path | None, conf: dict) -> str:
    """Put `batch` in the incoming folder, run one whole DAG run with `airflow dags test`, return its outcome."""
    if batch is not None:
        conf = {"batch": _deliver(batch), **conf}
    return _dags_test(DAG_ID, conf)


def run_monitor(conf: dict) -> str:
    """One whole run of the live-monitoring DAG with `airflow dags test`; returns its outcome line."""
    return _dags_test(MONITOR_DAG_ID, conf)


@contextlib.contextmanager
def sandbox(home: Path) -> Iterator[dict[str, str]]:
    """Environment variables that put a DAG run's whole state (the project's and Airflow's) under `home` and deploy
    to a local model server started here on a free port (stopped afterwards)."""
    from serving.process import local_server

    serving_dir = home / "serving" / MODEL_NAME
    serving_dir.mkdir(parents=True, exist_ok=True)
    with local_server(serving_dir) as url:
        yield {
            "CREDIT_RISK_HOME": str(home),
            "AIRFLOW_HOME": str(home / "airflow"),
            "CREDIT_RISK_DEPLOY_BACKEND": "local",
            "CREDIT_RISK_SERVING_URL": url,
        }


def run_dag_process(
    env: Mapping[str, str],
    batch: Path | None = None,
    conf: dict | None = None,
    timeout: float | None = None,
    command_name: str = "run-dag",
) -> subprocess.CompletedProcess:
    """`run-dag [batch] --conf conf` (or `run-monitor --conf conf`) in a fresh process of the Airflow environment,
    with exactly `env`; output captured (its last stdout line is the outcome)."""
    command = [str(AIRFLOW.parent / "python"), __file__, command_name, *([str(batch)] if batch else [])]
    command += ["--conf", json.dumps(conf or {})]
    return subprocess.run(command, env=dict(env), capture_output=True, text=True, timeout=timeout)


def _api(path: str, token: str | None = None, method: str = "GET", body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{settings().airflow_url}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def _unpause(token: str, dag_id: str, timeout: float) -> None:
    """Unpause the DAG, waiting until the dag-processor has parsed it (the API answers 404 before that)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _api(f"/api/v2/dags/{dag_id}", token, "PATCH", {"is_paused": False})
            return
        except urllib.error.HTTPError as err:
            if err.code != 404 or time.monotonic() > deadline:
                raise RuntimeError(f"cannot unpause {dag_id}: HTTP {err.code} {err.read()[:300]!r}") from None
        time.sleep(2)


def _wait_until_idle(token: str, dag_id: str, timeout: float, settle: float = 10) -> None:
    """Let runs already under way finish before a batch is delivered: a freshly unpaused DAG gets a scheduled run
    for its latest interval, which would otherwise take the batch from the run this caller triggers."""
    started = time.monotonic()
    busy = f"/api/v2/dags/{dag_id}/dagRuns?state=queued&state=running"
    while _api(busy, token)["total_entries"] or time.monotonic() - started < settle:
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{dag_id} still has runs under way after {timeout:.0f}s")
        time.sleep(2)


def trigger(
    batch: Path | None,
    conf: dict,
    timeout: float = 1800,
    dag_id: str = DAG_ID,
    before_run: Callable[[], object] | None = None,
) -> str:
    """Put `batch` in the incoming folder and trigger a run through Airflow's REST API, as the UI would; wait for it
    and return its outcome. `before_run` is called once no other run of the DAG is under way (e.g. to send the
    traffic a monitoring run is to judge). Needs the Airflow that `start()` runs."""
    password = json.loads(_passwords_file().read_text())[USER]
    token = _api("/auth/token", method="POST", body={"username": USER, "password": password})["access_token"]
    _unpause(token, dag_id, timeout=120)
    _wait_until_idle(token, dag_id, timeout)
    if before_run is not None:
        before_run()
    if batch is not None:
        conf = {"batch": _deliver(batch), **conf}
    run = _api(f"/api/v2/dags/{dag_id}/dagRuns", token, "POST", {"logical_date": None, "conf": conf})
    path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run['dag_run_id'], safe='')}"
    deadline = time.monotonic() + timeout
    while (state := _api(path, token)["state"]) not in ("success", "failed"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run['dag_run_id']} still {state} after {timeout:.0f}s")
        time.sleep(3)
    record = json.loads(_last_run(dag_id).read_text())
    if state != "success" or record.get("run_id") != run["dag_run_id"]:
        raise RuntimeError(f"run {run['dag_run_id']} {state}; see the task logs in the UI ({settings().airflow_url})")
    return record["outcome"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up")
    commands.add_parser("down")
    run = commands.add_parser("run-dag")
    run.add_argument("batch", nargs="?", type=Path, help="a CSV batch to copy into the incoming folder")
    run.add_argument("--conf", default="{}", help="DAG params as JSON, e.g. '{\"force_retrain\": true}'")
    monitor = commands.add_parser("run-monitor")
    monitor.add_argument("--conf", default="{}", help="DAG params as JSON, e.g. '{\"min_predictions\": 500}'")
    args = parser.parse_args()
    if args.command == "up":
        print(start())
    elif args.command == "down":
        print("Airflow stopped" if stop() else "Airflow was not running")
    elif args.command == "run-monitor":
        try:
            print(run_monitor(json.loads(args.conf)))
        except RuntimeError as err:
            print(f"failed: {err}")
            sys.exit(1)
    else:
        if args.batch is not None and not args.batch.is_file():
            parser.error(f"no such batch file: {args.batch}")
        try:
            print(run_dag(args.batch, json.loads(args.conf)))
        except RuntimeError as err:
            print(f"failed: {err}")
            sys.exit(1)


if __name__ == "__main__":
    main()
