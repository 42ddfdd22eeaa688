"""Put a blessed model into serving, prove it answers, and roll back to the previous version on any failure.

    python -m serving.deploy deploy [--version N]   # newest under settings().model_dir by default
    python -m serving.deploy rollback               # back to the previously live version
    python -m serving.deploy status                 # the record of what is live

Backends (settings().deploy_backend, `auto` picks docker when an engine answers):
- docker: build `<serving_image>:<version>` from serving/Dockerfile with the model baked in, then
  `docker compose up -d --no-deps serving` with SERVING_TAG=<version>; rollback re-ups the previous tag.
- local: copy the version into settings().serving_dir, which the local server watches and hot-swaps;
  rollback removes it so the previous version is the newest again.
Either way the step waits until `GET /v1/models/credit_risk` shows the version AVAILABLE and a smoke prediction
succeeds. The result is a dict for the DAG's alert. Standard library only: the Airflow environment can import it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from serving import client, process
from tfx_modules import private
from tfx_modules.config import MODEL_NAME, PROJECT_ROOT, Settings, settings

SERVING_SRC = Path(__file__).resolve().parent
IMAGE_FILES = ("Dockerfile", "models.config", "monitoring.config", "batching.config")
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
COMPOSE_SERVICE = "serving"
RECORD_NAME = "serving.json"
HISTORY_LENGTH = 50


class DeployError(Exception):
    pass


class Backend(Protocol):
    name: str

    def activate(self, version: int) -> str:
        """Make `version` the one served; returns what was deployed (image tag or directory)."""

    def restore(self, bad: int, good: int) -> None:
        """Serve `good` again instead of `bad`."""


def _run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 900) -> None:
    try:
        proc = subprocess.run(
            cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DeployError(f"{' '.join(cmd)}: {exc}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise DeployError(f"{' '.join(cmd)} exited {proc.returncode}: {' | '.join(tail)}")


def model_version_dir(s: Settings, version: int) -> Path:
    path = s.model_dir / str(version)
    if not (path / "saved_model.pb").is_file():
        raise DeployError(f"no blessed model version {version} under {s.model_dir}")
    return path


class DockerBackend:
    name = "docker"

    def __init__(self, s: Settings, docker: str = "docker", compose_file: Path = COMPOSE_FILE) -> None:
        self.s, self.docker, self.compose_file = s, docker, compose_file

    def tag(self, version: int) -> str:
        return f"{self.s.serving_image}:{version}"

    def build(self, version: int) -> str:
        """Build from a small staged context: the serving files plus the one model version, nothing else."""
        source = model_version_dir(self.s, version)
        with tempfile.TemporaryDirectory(prefix="serving-image-") as ctx:
            for name in IMAGE_FILES:
                shutil.copy2(SERVING_SRC / name, Path(ctx) / name)
            shutil.copytree(source, Path(ctx) / "model" / str(version))
            tag = self.tag(version)
            _run([self.docker, "build", "--build-arg", f"MODEL_VERSION={version}", "-t", tag, ctx])
        return tag

    def up(self, version: int) -> None:
        cmd = [self.docker, "compose", "-f", str(self.compose_file), "up", "-d", "--no-deps", COMPOSE_SERVICE]
        _run(cmd, env={"SERVING_TAG": str(version)}, timeout=300)

    def activate(self, version: int) -> str:
        tag = self.build(version)
        self.up(version)
        return tag

    def restore(self, bad: int, good: int) -> None:
        self.up(good)  # the previous image is still in the engine's store


class LocalBackend:
    name = "local"

    def __init__(self, s: Settings) -> None:
        self.s = s

    def place(self, version: int) -> Path:
        """Copy a version next to the served ones; the rename makes it appear whole to the server's poller."""
        target = self.s.serving_dir / str(version)
        if not target.exists():
            self.s.serving_dir.mkdir(parents=True, exist_ok=True)
            staging = self.s.serving_dir / f".staging-{version}"
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(model_version_dir(self.s, version), staging)
            staging.rename(target)
        return target

    def remove(self, version: int) -> None:
        target = self.s.serving_dir / str(version)
        if target.exists():
            doomed = self.s.serving_dir / f".removing-{version}"
            shutil.rmtree(doomed, ignore_errors=True)
            target.rename(doomed)
            shutil.rmtree(doomed)

    def activate(self, version: int) -> str:
        return str(self.place(version))

    def restore(self, bad: int, good: int) -> None:
        self.place(good)
        self.remove(bad)
        for p in self.s.serving_dir.iterdir():  # anything newer than `good` would win over it
            if p.name.isdigit() and int(p.name) > good:
                self.remove(int(p.name))

    def prune(self, keep: set[int]) -> None:
        for p in self.s.serving_dir.iterdir():
            if p.name.isdigit() and int(p.name) not in keep:
                self.remove(int(p.name))


def docker_engine_available(docker: str = "docker") -> bool:
    if shutil.which(docker) is None:
        return False
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=15, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def make_backend(name: str, s: Settings) -> DockerBackend | LocalBackend:
    if name == "auto":
        name = "docker" if docker_engine_available() else "local"
    if name == "docker":
        return DockerBackend(s)
    if name == "local":
        return LocalBackend(s)
    raise DeployError(f"unknown deploy backend {name!r} (expected auto, docker or local)")


def wait_available(url: str, version: int, timeout: float) -> None:
    """Until the server reports `version` AVAILABLE; fails fast when it reports the load failed."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            statuses = client.request(f"{url.rstrip('/')}/v1/models/{MODEL_NAME}", timeout=5)["model_version_status"]
        except (client.ServingError, KeyError, TypeError) as exc:
            last = str(exc)
        else:
            mine = [st for st in statuses if st.get("version") == str(version)]
            if mine and mine[0].get("state") == "AVAILABLE":
                return
            if mine and mine[0].get("status", {}).get("error_code", "OK") != "OK":
                raise DeployError(f"version {version} failed to load: {mine[0]['status'].get('error_message')}")
            last = f"status {statuses}"
        time.sleep(0.5)
    raise DeployError(f"version {version} not AVAILABLE after {timeout:.0f}s ({last})")


def smoke(url: str, version: int) -> float:
    """One prediction from the new version; returns its probability."""
    try:
        (pred,) = client.predict(url, [client.example_row()], version=version)
        probability, label = float(pred["probability"]), int(pred["label"])
    except (client.ServingError, KeyError, TypeError, ValueError) as exc:
        raise DeployError(f"smoke prediction on version {version} failed: {exc}") from None
    if not (0.0 <= probability <= 1.0 and label in (0, 1)):
        raise DeployError(f"smoke prediction on version {version} is out of range: {pred}")
    return probability


def newest_version(model_dir: Path) -> int:
    found = process.versions(model_dir)
    if not found:
        raise DeployError(f"no blessed model under {model_dir}")
    return max(found)


def record_path(s: Settings) -> Path:
    return s.state_dir / RECORD_NAME


def read_record(s: Settings) -> dict[str, Any]:
    path = record_path(s)
    return json.loads(path.read_text()) if path.exists() else {"live": None, "previous": None, "history": []}


def _write_record(s: Settings, record: dict[str, Any]) -> None:
    path = record_path(s)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _conclude(s: Settings, record: dict[str, Any], result: dict[str, Any], live: Any, previous: Any) -> dict[str, Any]:
    event = {"at": _now(), **result}
    record.update(live=live, previous=previous, history=[*record.get("history", []), event][-HISTORY_LENGTH:])
    _write_record(s, record)
    return result


def _switch(backend: Backend, s: Settings, version: int, timeout: float) -> tuple[str, float]:
    ref = backend.activate(version)
    wait_available(s.serving_url, version, timeout)
    return ref, smoke(s.serving_url, version)


def redeploy(version: int | None = None, backend: str | None = None, timeout: float = 180.0) -> dict[str, Any]:
    """Deploy a blessed version (default: the newest); on any failure go back to the live one.

    Returns {"status": "deployed" | "unchanged" | "rolled_back" | "failed", "version", "live", "message", ...}.
    """
    s = settings()
    record = read_record(s)
    live = record.get("live")
    try:
        version = version if version is not None else newest_version(s.model_dir)
        be = make_backend(backend or s.deploy_backend, s)
    except DeployError as exc:
        return {"status": "failed", "version": version, "live": live and live["version"], "message": str(exc)}
    base = {"version": version, "backend": be.name}
    if live and live["version"] == version:
        return {**base, "status": "unchanged", "live": version, "message": f"version {version} is already live"}
    try:
        ref, probability = _switch(be, s, version, timeout)
    except (DeployError, OSError) as exc:
        return _recover(s, be, record, base, live, f"deploying version {version} failed: {exc}", timeout)
    entry = {"version": version, "backend": be.name, "ref": ref, "deployed_at": _now()}
    if isinstance(be, LocalBackend):
        be.prune({version, *([live["version"]] if live else [])})
    result = {**base, "status": "deployed", "live": version, "previous": live and live["version"]}
    result["message"] = f"version {version} is live (smoke probability {probability:.3f})"
    return _conclude(s, record, result, entry, live)


def _recover(
    s: Settings, be: Backend, record: dict[str, Any], base: dict[str, Any], live: Any, why: str, timeout: float
) -> dict[str, Any]:
    version = base["version"]
    if not live:
        if isinstance(be, LocalBackend):
            be.remove(version)
        return _conclude(s, record, {**base, "status": "failed", "live": None, "message": why}, None, None)
    try:
        be.restore(version, live["version"])
        wait_available(s.serving_url, live["version"], timeout)
    except (DeployError, OSError) as exc:
        message = f"{why}; rollback to version {live['version']} failed too: {exc}"
        return _conclude(s, record, {**base, "status": "failed", "live": None, "message": message}, None, live)
    message = f"{why}; rolled back to version {live['version']}"
    result = {**base, "status": "rolled_back", "live": live["version"], "message": message}
    return _conclude(s, record, result, live, record.get("previous"))


def rollback(timeout: float = 180.0) -> dict[str, Any]:
    """Serve the previously live version again (the record's `previous`); live and previous swap places."""
    s = settings()
    record = read_record(s)
    live, previous = record.get("live"), record.get("previous")
    if not previous:
        return {"status": "failed", "live": live and live["version"], "message": "no previous version recorded"}
    be = make_backend(previous["backend"], s)
    base = {"version": previous["version"], "backend": be.name}
    try:
        if live:
            be.restore(live["version"], previous["version"])
        else:
            be.activate(previous["version"])
        wait_available(s.serving_url, previous["version"], timeout)
        smoke(s.serving_url, previous["version"])
    except (DeployError, OSError) as exc:
        return {**base, "status": "failed", "live": None, "message": f"rollback failed: {exc}"}
    result = {**base, "status": "rolled_back", "live": previous["version"], "message": "manual rollback"}
    return _conclude(s, record, result, {**previous, "deployed_at": _now()}, live)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Deploy a blessed model to serving, or roll back.")
    sub = parser.add_subparsers(dest="command", required=True)
    dep = sub.add_parser("deploy")
    dep.add_argument("--version", type=int)
    dep.add_argument("--backend", choices=("auto", "docker", "local"))
    sub.add_parser("rollback")
    sub.add_parser("status")
    args = parser.parse_args(argv)
    private.keep_private(settings().home)
    if args.command == "status":
        print(json.dumps(read_record(settings()), indent=2))
        return 0
    result = redeploy(args.version, args.backend) if args.command == "deploy" else rollback()
    print(json.dumps(result, indent=2))
    succeeded = {"deploy": ("deployed", "unchanged"), "rollback": ("rolled_back",)}[args.command]
    return 0 if result["status"] in succeeded else 1


if __name__ == "__main__":
    sys.exit(main())
