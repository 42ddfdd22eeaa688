"""Airflow on this machine: `up` (api-server/UI, scheduler, dag-processor, triggerer; with the CeleryExecutor also
Redis and the Celery workers), `down`, `run-dag` and `run-monitor`.

    python scripts/airflow_local.py up         # prints the URL and the login
    python scripts/airflow_local.py down
    python scripts/airflow_local.py run-dag [BATCH] [--conf JSON]   # last line: the run's outcome
    python scripts/airflow_local.py run-monitor [--conf JSON]       # one live-monitoring run; last line its outcome

Everything lives under settings().airflow_home (AIRFLOW_HOME, under CREDIT_RISK_HOME) with the committed
airflow.cfg (AIRFLOW_CONFIG). `up` starts `serve` (this script) in its own session: it runs the four components
`airflow standalone` would, with the API server on settings().airflow_host (127.0.0.1 unless set) and without the
log servers, which bind every interface (see `components`); `down` stops it with SIGINT. The executor is
AIRFLOW_EXECUTOR: the LocalExecutor (default) runs tasks in the scheduler; the CeleryExecutor in
CREDIT_RISK_CELERY_WORKERS `airflow celery worker` processes, with Redis as broker (started here when
CREDIT_RISK_CELERY_BROKER_URL points at this machine). The admin password is CREDIT_RISK_AIRFLOW_PASSWORD when set,
else the one Airflow generates. `run-dag` hands the run to that Airflow when it is up, else runs `airflow dags test`
(after making sure the deploy step will find a model server); `run-monitor` does the same with the live-monitoring
DAG. `triggered_run()` and `rerun()` (a run cleared, as the UI's Clear does) go through the REST API of a running
Airflow. `start()`/`stop()` are the functions a combined `make up` calls; `sandbox()`, `running_airflow()` and
`run_dag_process()` are how tests and benchmarks run the DAG apart from this machine's state. Standard library only
(`sandbox()` starts the model server, which needs the ML environment).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import permissions
from common.config import PROJECT_ROOT, settings
from containers.airflow_api import AirflowAPI, Report
from tfx_modules.ml_worker import client as ml_client

DAG_ID = "credit_risk_retraining"
MONITOR_DAG_ID = "credit_risk_monitoring"
AIRFLOW = PROJECT_ROOT / ".venvs" / "airflow" / "bin" / "airflow"
PASSWORD_ENV = "CREDIT_RISK_AIRFLOW_PASSWORD"
USER = "admin"
API_START_SECONDS = 120.0  # how long `serve` waits for the API server before starting the rest anyway
ORPHAN_GRACE_SECONDS = 10.0  # a task left by a dead scheduler cannot report anyway: SIGKILL after this


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
        "AIRFLOW__API__HOST": config.airflow_host,
        "AIRFLOW__API__PORT": str(config.airflow_port),
        "AIRFLOW__API__BASE_URL": config.airflow_url,
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__CORE__EXECUTOR": config.airflow_executor,
        "AIRFLOW__CELERY__BROKER_URL": config.celery_broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": config.celery_broker_url,
        "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p),
        "PATH": os.pathsep.join(p for p in (str(AIRFLOW.parent), os.environ.get("PATH")) if p),  # `airflow` for tasks
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
    return settings().airflow_home / "airflow.pid"


def _log(name: str) -> Path:
    return settings().airflow_home / f"{name}.log"


def running() -> int | None:
    """The pid of the `serve` process that `start()` started (also its session id), if it still runs."""
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


def _passwords_file() -> Path:
    return settings().airflow_home / "simple_auth_manager_passwords.json.generated"


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return host == "localhost"


def components() -> dict[str, list[str]]:
    """The command of each component, by name (also its log's), in start order: those `airflow standalone` runs, and
    with the CeleryExecutor the broker and the workers. The scheduler's and the triggerer's log servers bind every
    interface (Airflow has no setting for their address), and on one machine the API server reads task logs from
    disk: they run only when settings().airflow_host exposes Airflow anyway; the workers' never (one port each)."""
    config = settings()
    no_log_server = ["--skip-serve-logs"] if _loopback(config.airflow_host) else []
    celery = config.airflow_executor == "CeleryExecutor"
    found = {"redis": _redis()} if celery and _local_broker(config.celery_broker_url) else {}
    found |= {
        "scheduler": [str(AIRFLOW), "scheduler", *no_log_server],
        "dag-processor": [str(AIRFLOW), "dag-processor"],
        "triggerer": [str(AIRFLOW), "triggerer", *no_log_server],
        "api-server": [str(AIRFLOW), "api-server"],
    }
    for n in range(1, config.celery_workers + 1) if celery else ():
        pid_file = str(config.airflow_home / f"worker-{n}.pid")  # one per worker: Celery locks it
        worker = ["celery", "worker", "--concurrency", "1", "--celery-hostname", f"worker-{n}@%h", "--pid", pid_file]
        found[f"worker-{n}"] = [str(AIRFLOW), *worker, "--skip-serve-logs"]
    return found


def _local_broker(url: str) -> bool:
    """Whether the broker is a Redis on this machine, which `serve` then runs."""
    broker = urllib.parse.urlsplit(url)
    return broker.scheme == "redis" and _loopback(broker.hostname or "")


def _redis() -> list[str]:
    """Debian's redis-server on the broker URL's loopback port, as a queue (nothing saved), its folder in
    AIRFLOW_HOME."""
    config = settings()
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("the CeleryExecutor's broker needs redis-server: run `make setup-monitoring`")
    folder = config.airflow_home / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    broker = urllib.parse.urlsplit(config.celery_broker_url)
    address = ["--bind", broker.hostname or "127.0.0.1", "--port", str(broker.port or 6379), "--dir", str(folder)]
    return [server, *address, "--save", "", "--appendonly", "no"]


def serve(stop_timeout: float = 45) -> int:
    """Run Airflow's components in the foreground, each logging to AIRFLOW_HOME/<component>.log, until SIGINT or
    SIGTERM (exit 0) or until one of them exits (exit 1); then SIGTERM to the others, SIGKILL after `stop_timeout`."""
    stopping: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stopping.append(signum))
    processes: dict[str, subprocess.Popen] = {}

    def launch(name: str, command: list[str]) -> None:
        with _log(name).open("ab") as log:
            processes[name] = subprocess.Popen(command, env=environment(), stdout=log, stderr=subprocess.STDOUT)

    commands = components()
    # The API server first: every task the scheduler starts talks to it at once, and one started before it answered
    # failed (after a restart mid-run: the rerun of the task the dead scheduler left, its last try).
    for name in ("redis", "api-server"):
        if name in commands:
            launch(name, commands.pop(name))
    deadline = time.monotonic() + API_START_SECONDS
    while not stopping and processes["api-server"].poll() is None and time.monotonic() < deadline:
        if _api_answers():
            break
        time.sleep(0.5)
    for name, command in commands.items() if not stopping else ():
        launch(name, command)
    while not stopping and all(p.poll() is None for p in processes.values()):
        time.sleep(0.5)
    for name, process in processes.items():
        if process.poll() is not None and not stopping:
            print(f"airflow {name} exited with {process.returncode}; see {_log(name)}", flush=True)
    if not stopping:
        _end_session(ORPHAN_GRACE_SECONDS)
    for process in processes.values():
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + stop_timeout
    for process in processes.values():
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return 0 if stopping else 1


def _end_session(timeout: float) -> None:
    """SIGTERM, then SIGKILL after `timeout`, to every other process of this process's session when `serve` leads it
    (as `start` runs it): the components, and the running tasks of a scheduler that died (each in a process group
    of its own, which stopping the components does not reach). Left alone, those ran on unseen beside the reruns the
    next scheduler started for them (two Transforms of one run writing the same output: the rerun failed). The warm
    ML worker has a session of its own; it stops a call whose task is gone."""
    me = os.getpid()
    if os.getsid(0) != me:
        return

    def others() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(ValueError, OSError):
                if int(entry.name) != me and os.getsid(int(entry.name)) == me:
                    found.append(int(entry.name))
        return found

    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        for pid in others():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while others() and time.monotonic() < deadline:
            for pid in others():
                _alive(pid)  # reaps it when it is a child
            time.sleep(0.5)


def _api_answers() -> bool:
    try:
        with urllib.request.urlopen(f"{settings().airflow_url}/api/v2/monitor/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _wait_healthy(timeout: float) -> None:
    url = settings().airflow_url
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _api_answers():
            return
        if running() is None:
            logs = ", ".join(str(_log(name)) for name in ("airflow", *components()))
            raise RuntimeError(f"Airflow exited; see {logs}")
        time.sleep(2)
    raise TimeoutError(f"Airflow not healthy at {url} after {timeout:.0f}s")


def start(timeout: float = 180) -> str:
    """Start Airflow unless it runs; return the login line."""
    if running() is None:
        components()  # what cannot run (no redis-server) fails here, not in the background
        migrate(force=True)
        password = os.environ.get(PASSWORD_ENV)
        if password:
            _passwords_file().write_text(json.dumps({USER: password}))
            _passwords_file().chmod(0o600)
        with _log("airflow").open("ab") as log:
            process = subprocess.Popen(
                [str(AIRFLOW.parent / "python"), __file__, "serve"],
                env=environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _pid_file().write_text(str(process.pid))
    _wait_healthy(timeout)
    password = json.loads(_passwords_file().read_text()).get(USER, "?")
    return f"Airflow UI: {settings().airflow_url} (user {USER}, password {password}); DAG {DAG_ID} is unpaused"


def stop(timeout: float = 60) -> bool:
    """SIGINT to `serve` (it stops the components); whatever of its session is left after `timeout` gets SIGTERM,
    then SIGKILL. Returns once the whole session is gone; False when nothing ran. The warm ML worker its tasks used
    (a session of its own) is stopped too."""
    ml_client.stop(settings().home)
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


def prepare_deploy(report: Report) -> None:
    """What the deploy step will need, checked before a run spends minutes training: with the docker backend an
    engine that answers (else fail now), with the local one a model server at settings().serving_url, started here
    as `make up` would when none answers (`make down` stops it)."""
    from containers import engine
    from serving import deploy, local_service

    s = settings()
    try:
        backend = deploy.make_backend(s.deploy_backend, s)
    except deploy.DeployError as err:
        raise RuntimeError(str(err)) from None
    if backend.name == "docker" and not engine.answers(None):
        raise RuntimeError(
            "the deploy step needs a Docker engine (CREDIT_RISK_DEPLOY_BACKEND=docker) and none answers: "
            "start it, or set CREDIT_RISK_DEPLOY_BACKEND=local"
        )
    if backend.name == "local" and not local_service.answers(s.serving_url):
        report(f"no model server answers at {s.serving_url}, which the deploy step needs: starting one")
        report(f"model server: {local_service.start()} (make down stops it)")


def run_dag(batch: Path | None, conf: dict, report: Report = print) -> str:
    """One whole DAG run on `batch` (put in the incoming folder); returns its outcome. When this CREDIT_RISK_HOME's
    Airflow is up, the run goes to it through the REST API (as `make run` does: `airflow dags test` beside a
    running scheduler fails with TaskAlreadyRunningError); else `airflow dags test` runs it here."""
    if running() is not None:
        report(f"Airflow is up at {settings().airflow_url}: the run goes to it")
        return trigger(batch, conf, report=report)
    if not conf.get("gate_only"):
        prepare_deploy(report)
    if batch is not None:
        conf = {"batch": _deliver(batch), **conf}
    return _dags_test(DAG_ID, conf)


def run_monitor(conf: dict, report: Report = print) -> str:
    """One whole run of the live-monitoring DAG; returns its outcome line. To this CREDIT_RISK_HOME's Airflow when it
    is up, as `run_dag` does, else with `airflow dags test` here."""
    if running() is not None:
        report(f"Airflow is up at {settings().airflow_url}: the run goes to it")
        return trigger(None, conf, report=report, dag_id=MONITOR_DAG_ID)
    return _dags_test(MONITOR_DAG_ID, conf)


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


def api() -> AirflowAPI:
    """This CREDIT_RISK_HOME's Airflow (as `start()` runs it) through its REST API."""
    password = json.loads(_passwords_file().read_text())[USER]
    return AirflowAPI(settings().airflow_url, USER, password)


def triggered_run(
    batch: Path | None,
    conf: dict,
    timeout: float = 1800,
    report: Report = lambda line: None,
    dag_id: str = DAG_ID,
    before_run: Callable[[], object] | None = None,
) -> dict:
    """Put `batch` in the incoming folder and trigger a run of `dag_id` through Airflow's REST API, as the UI would;
    wait for it, reporting the run's URL in the UI and each task as it starts and ends, and return the finished run
    as the REST API describes it (start_date, end_date, ...) with its outcome. `before_run` is called once no other
    run of the DAG is under way (e.g. to send the traffic a monitoring run is to judge). Needs the Airflow that
    `start()` runs."""
    airflow = api()
    airflow.unpause(dag_id)
    airflow.wait_until_idle(dag_id, timeout, report)
    if before_run is not None:
        before_run()
    if batch is not None:
        conf = {"batch": _deliver(batch), **conf}
    started = time.time()
    run_id = airflow.trigger(dag_id, conf)
    report(f"run {run_id}: {airflow.run_url(dag_id, run_id)}")
    return _finished(airflow, dag_id, run_id, started, timeout, report)


def rerun(run_id: str, timeout: float = 1800, report: Report = lambda line: None, dag_id: str = DAG_ID) -> dict:
    """Clear a finished run of `dag_id` (its tasks run again under the same run id, as after the UI's Clear) and
    return it as `triggered_run()` does, with the outcome of this second pass. Needs the Airflow `start()` runs."""
    airflow = api()
    started = time.time()
    airflow.clear(dag_id, run_id)
    report(f"run {run_id} cleared: {airflow.run_url(dag_id, run_id)}")
    return _finished(airflow, dag_id, run_id, started, timeout, report)


def _finished(airflow: AirflowAPI, dag_id: str, run_id: str, started: float, timeout: float, report: Report) -> dict:
    """Wait for the run; the run as the REST API describes it with the outcome it recorded after `started`."""
    state = airflow.follow(dag_id, run_id, timeout, report)
    last_run = _last_run(dag_id)
    record = json.loads(last_run.read_text()) if state == "success" and last_run.exists() else {}
    if record.get("run_id") != run_id or record.get("time", 0) < started:
        raise RuntimeError(airflow.failure_line(dag_id, run_id))
    return {**airflow.run(dag_id, run_id), "outcome": record["outcome"]}


def trigger(*args: Any, **kwargs: Any) -> str:
    """`triggered_run()`'s outcome line (same arguments)."""
    return triggered_run(*args, **kwargs)["outcome"]


def _conf(text: str) -> dict:
    """`--conf`'s value: a JSON object of DAG params, or a sentence saying what is wrong (not a traceback)."""
    example = """e.g. '{"force_retrain": true}'"""
    try:
        conf = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err}); give an object of DAG params, {example}") from None
    if not isinstance(conf, dict):
        raise argparse.ArgumentTypeError(f"{text} is not a JSON object of DAG params, {example}")
    return conf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up")
    commands.add_parser("down")
    commands.add_parser("serve", help="run the components in the foreground (what `up` starts in the background)")
    run = commands.add_parser("run-dag")
    run.add_argument("batch", nargs="?", type=Path, help="a CSV batch to copy into the incoming folder")
    run.add_argument("--conf", type=_conf, default={}, help="DAG params as JSON, e.g. '{\"force_retrain\": true}'")
    monitor = commands.add_parser("run-monitor")
    monitor.add_argument("--conf", type=_conf, default={}, help="DAG params as JSON, e.g. '{\"min_predictions\": 500}'")
    args = parser.parse_args()
    permissions.keep_private(settings().home)
    if args.command == "up":
        print(start())
    elif args.command == "down":
        print("Airflow stopped" if stop() else "Airflow was not running")
    elif args.command == "serve":
        sys.exit(serve())
    elif args.command == "run-monitor":
        try:
            print(run_monitor(args.conf), flush=True)
        except RuntimeError as err:
            print(f"failed: {err}")
            sys.exit(1)
    else:
        if args.batch is not None and not args.batch.is_file():
            parser.error(f"no such batch file: {args.batch}")
        try:
            print(run_dag(args.batch, args.conf), flush=True)
        except RuntimeError as err:
            print(f"failed: {err}")
            sys.exit(1)


if __name__ == "__main__":
    main()
