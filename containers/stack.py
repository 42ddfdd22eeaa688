"""The compose stack on a real Docker engine: `make compose-up`, `make compose-down`, `make compose-run`.

    python -m containers.stack up [--airgap] [--celery]   # build what is missing, up --wait, print URLs and login
    python -m containers.stack down [--purge]             # containers and networks gone; volumes kept unless --purge
    python -m containers.stack run DATA.csv [--airgap] [--celery] [--conf JSON]   # the main job inside the stack
    python -m containers.stack rollout VERSION [--stages S] [--shadow-requests N] [--canary-steps 5,25,100]
        [--step-requests N] [--stage-seconds S]   # roll a pushed version out over the two model containers

The engine is the user's when `docker info` answers, else a private dockerd (containers/engine.py), which `down`
stops again. `--celery` (`make compose-up CELERY=1`) runs the tasks on the CeleryExecutor, the `celery` profile's
Redis and airflow-worker replicas, whatever `.env` says; without it `.env` decides (LocalExecutor by default). A
missing `.env` is created from `.env.example` with fresh secrets; it is readable by the group that owns the Docker
socket (root-equivalent already) because the deploy step (in the scheduler or a worker) runs compose with it.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from base64 import urlsafe_b64encode
from pathlib import Path
from typing import Any

from common.config import PROJECT_ROOT
from containers import engine, images
from containers.airflow_api import AirflowAPI

ENV_FILE = PROJECT_ROOT / ".env"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
PROJECT = "credit-risk"
DAG_ID = "credit_risk_retraining"
SCHEDULER = "airflow-scheduler"
CONTAINER_HOME = "/opt/credit-risk/var"
GENERATED = {
    "POSTGRES_PASSWORD": lambda: secrets.token_urlsafe(24),
    "AIRFLOW_ADMIN_PASSWORD": lambda: secrets.token_urlsafe(12),
    "AIRFLOW_FERNET_KEY": lambda: urlsafe_b64encode(os.urandom(32)).decode(),
    "AIRFLOW_JWT_SECRET": lambda: secrets.token_urlsafe(32),
    "GRAFANA_ADMIN_PASSWORD": lambda: secrets.token_urlsafe(12),
}
AIRFLOW_URL = "http://127.0.0.1:8080"
URLS = {
    "Airflow (UI and REST API)": AIRFLOW_URL,
    "Predictions (TF Serving REST API)": "http://127.0.0.1:8501/v1/models/credit_risk",
    "Prometheus": "http://127.0.0.1:9090",
    "Alertmanager": "http://127.0.0.1:9093",
    "StatsD exporter metrics": "http://127.0.0.1:9102/metrics",
}
GRAFANA_URL = "http://127.0.0.1:3000"
ROLLOUT_FLAGS = ("stages", "shadow_requests", "canary_steps", "step_requests", "stage_seconds")  # passed through


class StackError(Exception):
    pass


def _print(line: str) -> None:
    print(f"[compose] {line}", flush=True)


def read_env() -> dict[str, str]:
    values = {}
    for line in ENV_FILE.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def socket_of(host: str | None) -> Path:
    return Path(host.removeprefix("unix://")) if host and host.startswith("unix://") else Path("/var/run/docker.sock")


def ensure_env_file(socket: Path) -> dict[str, str]:
    """Create .env from .env.example with generated secrets unless it exists, record the engine's socket and group in
    it (the scheduler's compose reads them there), and return its values. Written in place: the scheduler has the
    file bind-mounted, and a new file would not reach it."""
    lines = (ENV_FILE if ENV_FILE.exists() else ENV_EXAMPLE).read_text().splitlines()
    if not ENV_FILE.exists():
        ENV_FILE.touch(mode=0o600)
        print(f"[compose] creating {ENV_FILE.name} with generated secrets (edit the alert settings there)")
    engine_values = {"DOCKER_SOCKET": str(socket), "DOCKER_GID": str(socket.stat().st_gid)}
    out = []
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            if key in engine_values:
                line = f"{key}={engine_values[key]}"
            elif not value and key in GENERATED:
                line = f"{key}={GENERATED[key]()}"
        out.append(line)
    ENV_FILE.write_text("\n".join(out) + "\n")
    os.chown(ENV_FILE, -1, socket.stat().st_gid)
    ENV_FILE.chmod(0o640)
    return read_env()


class Stack:
    """One compose project on one engine; every compose call goes through `compose()`."""

    def __init__(self, airgap: bool, project: str = PROJECT, celery: bool = False) -> None:
        self.airgap, self.project = airgap, project
        host = engine.ensure()
        self.env = {"COMPOSE_PROJECT_NAME": project, "COMPOSE_BAKE": "false"}
        if celery:  # the shell's values win over .env's in compose's interpolation
            self.env |= {"COMPOSE_PROFILES": "celery", "AIRFLOW_EXECUTOR": "CeleryExecutor"}
        if host:
            self.env["DOCKER_HOST"] = host
            os.environ["DOCKER_HOST"] = host
        self.dotenv = ensure_env_file(socket_of(host))
        files = [images.COMPOSE_FILE, *([images.OVERRIDE] if airgap else [])]
        self.base = [*images.compose_command(), "--project-directory", str(PROJECT_ROOT)]
        self.base += [f for path in files for f in ("-f", str(path))]

    def compose(self, *args: str, check: bool = True, capture: bool = True, stdin: Any = None) -> str:
        return images.run([*self.base, *args], env=self.env, quiet=capture, stdin=stdin, check=check)

    def exec(self, *cmd: str, stdin: Any = None, check: bool = True) -> str:
        """A command in the scheduler container (where the DAG's tasks and the deploy step run)."""
        return self.compose("exec", "-T", SCHEDULER, *cmd, stdin=stdin, check=check)

    def deploy(self, *args: str) -> dict[str, Any]:
        """`python -m serving.deploy <args>` in the scheduler, as the DAG's deploy task runs it; its JSON answer."""
        return json.loads(self.exec("python", "-m", "serving.deploy", *args, check=False) or "{}")

    def rollout(self, version: int, *args: str) -> int:
        """`python -m serving.rollout_controller <version folder> <args>` in the scheduler, as `make rollout` runs on
        the local stack: the challenger is the idle model container. Its lines are shown; its exit code returned."""
        folder = f"{CONTAINER_HOME}/models/credit_risk/{version}"
        command = [*self.base, "exec", "-T", SCHEDULER, "python", "-m", "serving.rollout_controller", folder, *args]
        return subprocess.run(command, env={**os.environ, **self.env}, check=False).returncode

    def copy_model(self, version: int, new: int) -> None:
        """A pushed version again under a new number: a second blessed version to deploy."""
        models = f"{CONTAINER_HOME}/models/credit_risk"
        self.exec("cp", "-r", f"{models}/{version}", f"{models}/{new}")

    def build(self) -> dict[str, float]:
        return images.build_all(self.airgap)

    def up(self, timeout: int = 600) -> float:
        """`up --wait` (every service healthy), then the live model container again; returns the seconds `up` took."""
        pull = ["--pull", "never", "--no-build"] if self.airgap else []
        start = time.monotonic()
        self.compose("up", "-d", "--wait", "--wait-timeout", str(timeout), *pull, capture=False)
        seconds = time.monotonic() - start
        resumed = self.deploy("resume")
        if resumed.get("status") == "resumed":
            print(f"[compose] {resumed['message']}")
        return seconds

    def down(self, purge: bool = False) -> None:
        self.compose("--profile", "*", "down", "--remove-orphans", *(["--volumes"] if purge else []), capture=False)

    def airflow(self) -> AirflowAPI:
        return AirflowAPI(AIRFLOW_URL, "admin", self.dotenv["AIRFLOW_ADMIN_PASSWORD"])

    def deliver(self, batch: Path) -> str:
        """Write a batch into the scheduler's incoming folder under a hidden name, then rename it (atomic)."""
        incoming, name = f"{CONTAINER_HOME}/incoming", batch.name
        partial = f"{incoming}/.{name}.{uuid.uuid4().hex}.partial"
        script = f'mkdir -p {incoming} && cat > "{partial}" && mv "{partial}" "{incoming}/{name}"'
        with batch.open("rb") as data:
            self.exec("sh", "-c", script, stdin=data)
        return name

    def run(self, batch: Path | None, conf: dict[str, Any], timeout: float = 3600) -> str:
        """Deliver a batch, trigger the DAG over REST as the UI would, print progress, return the outcome line."""
        api = self.airflow()
        api.wait_healthy(timeout=300)
        api.unpause(DAG_ID)
        api.wait_until_idle(DAG_ID, timeout, _print)
        if batch is not None:
            conf = {"batch": self.deliver(batch), **conf}
        run_id = api.trigger(DAG_ID, conf)
        _print(f"run {run_id}: {api.run_url(DAG_ID, run_id)}")
        state = api.follow(DAG_ID, run_id, timeout, _print)
        if state != "success":
            raise StackError(api.failure_line(DAG_ID, run_id))
        record = self.last_run()
        if record.get("run_id") != run_id:
            raise StackError(f"run {run_id} recorded no outcome (last outcome: {record.get('run_id')})")
        return str(record["outcome"])

    def last_run(self) -> dict[str, Any]:
        """The DAG's record of its last run (run_id, outcome, ...), as it wrote it in the state folder."""
        return json.loads(self.exec("cat", f"{CONTAINER_HOME}/state/last_run.json"))

    def task_hosts(self) -> dict[str, str]:
        """Task id -> the host that ran it, for the last run's tasks."""
        return self.airflow().task_hosts(DAG_ID, self.last_run()["run_id"])

    def hostnames(self, service: str) -> set[str]:
        """The host names of a service's running containers (one per replica), as their processes see them."""
        ids = self.compose("ps", "-q", service).split()
        return set(images.run(["docker", "inspect", "-f", "{{.Config.Hostname}}", *ids], env=self.env).split())

    def summary(self) -> str:
        lines = [f"{name}: {url}" for name, url in URLS.items()]
        lines.append(f"Airflow login: admin / {self.dotenv['AIRFLOW_ADMIN_PASSWORD']} (AIRFLOW_ADMIN_PASSWORD in .env)")
        if self.airgap:
            lines.append("Grafana: not in the air-gapped stack (no image can be built here); see monitoring/README.md")
        else:
            lines.append(f"Grafana: {GRAFANA_URL} (GRAFANA_ADMIN_USER / GRAFANA_ADMIN_PASSWORD in .env)")
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "run"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--airgap", action="store_true", help="images from docker-compose.airgap.yml")
        cmd.add_argument("--celery", action="store_true", help="the CeleryExecutor: Redis and airflow-worker replicas")
    sub.choices["run"].add_argument("batch", type=Path)
    sub.choices["run"].add_argument("--conf", default="{}", help="DAG params as JSON")
    rollout = sub.add_parser("rollout", help="roll a pushed version out over the two model containers")
    rollout.add_argument("version", type=int, help="a version under the stack's models/credit_risk/")
    for flag in ROLLOUT_FLAGS:
        rollout.add_argument(f"--{flag.replace('_', '-')}")
    down = sub.add_parser("down")
    down.add_argument("--purge", action="store_true", help="remove the volumes too")
    args = parser.parse_args(argv)
    try:
        if args.command == "down":
            if engine.answers(None) or engine.private_pid() is not None:
                Stack(airgap=True).down(args.purge)
            print("stopped the private dockerd" if engine.stop_private() else "compose stack down")
            return 0
        if args.command == "rollout":
            given = [(k, getattr(args, k)) for k in ROLLOUT_FLAGS if getattr(args, k)]
            passed = [f for k, v in given for f in (f"--{k.replace('_', '-')}", v)]
            return Stack(airgap=True).rollout(args.version, *passed)
        if not args.airgap:
            images.require_registry()  # before an engine is started for nothing
        stack = Stack(args.airgap, celery=args.celery)
        if args.airgap:
            print("[compose] air-gapped: Grafana cannot be built here and does not start; everything else does")
        stack.build()
        stack.up()
        print(stack.summary())
        if args.command == "run":
            print(stack.run(args.batch, json.loads(args.conf)))
    except (engine.EngineError, images.CommandError, StackError, RuntimeError) as exc:
        print(f"compose: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
