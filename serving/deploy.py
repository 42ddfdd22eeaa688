"""Put a blessed model into serving, prove it answers, and roll back to the previous version on any failure.

    python -m serving.deploy deploy [--version N]   # newest under settings().model_dir by default
    python -m serving.deploy rollback               # back to the previously live version
    python -m serving.deploy resume                 # docker: start the live version's container again (after a down)
    python -m serving.deploy status                 # what is live, the deploy history, each version's model card

Clients always call the gateway (serving/gateway.py, settings().serving_url); what stands behind it depends on the
backend (settings().deploy_backend):
- local: copy the version into settings().serving_dir, which the local model server watches and hot-swaps (the old
  version answers until the new one has loaded); rollback removes it so the previous version is the newest again.
- docker (the compose stack): blue/green model containers. Build `<serving_image>:<version>` from serving/Dockerfile
  with the model baked in, start it in the idle slot (`model-blue` / `model-green`) beside the live one, wait for
  AVAILABLE and a smoke prediction on it directly, switch the gateway's routes file, check again through the gateway,
  let the requests under way on the old container finish, then stop it. A new container that fails is stopped and
  the gateway never leaves the old one, so a failed deploy drops no request.
The result is a dict for the DAG's alert. Standard library only: the Airflow environment can import it.
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
import urllib.parse
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from common import permissions
from common.config import MODEL_NAME, PROJECT_ROOT, Settings, settings
from common.records.deploy_record import read_record, record_path
from serving import client, process

SERVING_SRC = Path(__file__).resolve().parent
IMAGE_FILES = ("Dockerfile", "models.config", "monitoring.config", "batching.config")
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
SLOTS = ("blue", "green")
GRPC_PORT = 8500  # every model container serves gRPC here (serving/Dockerfile: --port=8500)
HISTORY_LENGTH = 50
DRAIN_SECONDS = 10.0  # the longest the old container is given to finish the requests under way

Check = Callable[[str], float]  # waits until a server at this URL serves the version; returns a smoke probability


class DeployError(Exception):
    pass


class Backend(Protocol):
    name: str

    def activate(self, version: int, check: Check) -> str:
        """Make `version` the one served and `check` it; returns what was deployed (image tag or directory)."""

    def restore(self, bad: int, good: int) -> None:
        """Serve `good` again instead of `bad`."""


def _run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 900) -> str:
    try:
        proc = subprocess.run(
            cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DeployError(f"{' '.join(cmd)}: {exc}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise DeployError(f"{' '.join(cmd)} exited {proc.returncode}: {' | '.join(tail)}")
    return proc.stdout


def model_version_dir(s: Settings, version: int) -> Path:
    path = s.model_dir / str(version)
    if not (path / "saved_model.pb").is_file():
        raise DeployError(f"no blessed model version {version} under {s.model_dir}")
    return path


def _readable(tree: Path) -> None:
    """Make a staged model readable by the image's server user: the Pusher writes it owner-only (umask 077), and
    COPY gives the files to root with their modes kept."""
    for path in [tree, *tree.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    """Replace a small JSON file atomically: readers see the old or the new content, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)


class DockerBackend:
    """Blue/green model containers of the compose stack behind the gateway."""

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
            _readable(Path(ctx) / "model")
            tag = self.tag(version)
            args = [f"MODEL_VERSION={version}", f"TF_SERVING_IMAGE={self.s.serving_base_image}"]
            _run([self.docker, "build", *(f for a in args for f in ("--build-arg", a)), "-t", tag, ctx])
        return tag

    def _compose(self, *args: str, env: dict[str, str] | None = None) -> str:
        return _run([self.docker, "compose", "-f", str(self.compose_file), *args], env=env, timeout=300)

    def live_route(self) -> dict[str, Any]:
        """The gateway's routes file: which slot and version it sends requests to ({} before the first deploy)."""
        try:
            return json.loads(self.s.gateway_routes.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def slot_url(self, slot: str) -> str:
        return self.s.serving_slot_url.format(slot=slot)

    def slot_grpc(self, slot: str) -> str:
        """A model container's gRPC address (TF Serving's --port)."""
        return f"{urllib.parse.urlsplit(self.slot_url(slot)).hostname}:{GRPC_PORT}"

    def start(self, slot: str, version: int) -> None:
        self._compose("up", "-d", "--no-deps", f"model-{slot}", env={f"MODEL_{slot.upper()}_TAG": str(version)})

    def stop(self, slot: str) -> None:
        self._compose("stop", f"model-{slot}")

    def route(self, slot: str, version: int, timeout: float = 30.0) -> None:
        """Point the gateway at a slot and wait until it has read the change."""
        upstream = self.slot_url(slot)
        routes = {"upstream": upstream, "grpc_upstream": self.slot_grpc(slot), "version": version, "slot": slot}
        _write_json(self.s.gateway_routes, routes)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.gateway_status().get("upstream") == upstream:
                return
            time.sleep(0.1)
        raise DeployError(f"the gateway at {self.s.serving_url} did not switch to {upstream} within {timeout:.0f}s")

    def drain(self, slot: str) -> None:
        """Wait until the gateway has no request under way on a slot (at most DRAIN_SECONDS)."""
        drain(self.s.serving_url, self.slot_url(slot))

    def gateway_status(self) -> dict[str, Any]:
        return gateway_status(self.s.serving_url)

    def idle_slot(self) -> str:
        """The model container the gateway does not route to: where a new version starts (or a rollout's challenger)."""
        return SLOTS[1] if self.live_route().get("slot") == SLOTS[0] else SLOTS[0]

    def activate(self, version: int, check: Check) -> str:
        live = self.live_route()
        old = live.get("slot")
        slot = self.idle_slot()
        tag = self.build(version)
        self.start(slot, version)
        try:
            check(self.slot_url(slot))
            self.route(slot, version)
            check(self.s.serving_url)
        except (DeployError, OSError):
            if old:
                self.route(old, live["version"])
            self.stop(slot)
            raise
        if old:
            self.drain(old)
            self.stop(old)
        return tag

    def restore(self, bad: int, good: int) -> None:
        """activate() never leaves the gateway on a failed container: make sure the live one still runs."""
        live = self.live_route()
        if live.get("version") != good:
            raise DeployError(f"the gateway routes to {live or 'nothing'}, not to version {good}")
        self.start(live["slot"], good)


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
            try:
                shutil.copytree(model_version_dir(self.s, version), staging)
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)  # a full disk: give back what the copy took
                raise
            staging.rename(target)
        return target

    def remove(self, version: int) -> None:
        target = self.s.serving_dir / str(version)
        if target.exists():
            doomed = self.s.serving_dir / f".removing-{version}"
            shutil.rmtree(doomed, ignore_errors=True)
            target.rename(doomed)
            shutil.rmtree(doomed)

    def serve(self, version: int) -> Path:
        """Place `version` and remove anything newer, which the server's "latest" policy would prefer."""
        target = self.place(version)
        for newer in [v for v in process.versions(self.s.serving_dir) if v > version]:
            self.remove(newer)
        return target

    def activate(self, version: int, check: Check) -> str:
        path = str(self.serve(version))
        check(self.s.serving_url)
        return path

    def restore(self, bad: int, good: int) -> None:
        """Serve `good` again; `bad` goes whatever happens, so a failed rollback leaves nothing wrong served."""
        try:
            self.serve(good)
        finally:
            self.remove(bad)

    def prune(self, keep: set[int]) -> None:
        for p in self.s.serving_dir.iterdir():
            if p.name.isdigit() and int(p.name) not in keep:
                self.remove(int(p.name))


def gateway_status(serving_url: str) -> dict[str, Any]:
    """The gateway's route and requests under way ({} while it does not answer)."""
    try:
        status = client.request(f"{serving_url.rstrip('/')}/gateway/status", timeout=5)
    except client.ServingError:
        return {}
    return status if isinstance(status, dict) else {}


def drain(serving_url: str, upstream: str, seconds: float = DRAIN_SECONDS) -> bool:
    """Wait until the gateway at `serving_url` has no request under way on the model server `upstream` (its REST
    URL: the gateway counts REST and gRPC calls alike under it), at most `seconds`; whether it drained. A gateway
    that does not answer is waited for: it may have calls under way."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = gateway_status(serving_url)
        if status and not status.get("in_flight", {}).get(upstream):
            return True
        time.sleep(0.1)
    return False


def make_backend(name: str, s: Settings) -> DockerBackend | LocalBackend:
    if name == "docker":
        return DockerBackend(s)
    if name == "local":
        return LocalBackend(s)
    raise DeployError(f"unknown deploy backend {name!r} (expected docker or local)")


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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _conclude(s: Settings, record: dict[str, Any], result: dict[str, Any], live: Any, previous: Any) -> dict[str, Any]:
    event = {"at": _now(), **result}
    record.update(live=live, previous=previous, history=[*record.get("history", []), event][-HISTORY_LENGTH:])
    _write_json(record_path(s), record)
    return result


def _switch(backend: Backend, version: int, timeout: float) -> tuple[str, float]:
    """Activate a version; returns the backend's reference and the last smoke prediction's probability."""
    probabilities: list[float] = []

    def check(url: str) -> float:
        wait_available(url, version, timeout)
        probabilities.append(smoke(url, version))
        return probabilities[-1]

    return backend.activate(version, check), probabilities[-1]


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
        ref, probability = _switch(be, version, timeout)
    except (DeployError, OSError) as exc:
        return _recover(s, be, record, base, live, f"deploying version {version} failed: {exc}", timeout)
    entry = {"version": version, "backend": be.name, "ref": ref, "deployed_at": _now()}
    if isinstance(be, DockerBackend):
        entry["slot"] = be.live_route().get("slot")
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
        ref, _ = _switch(be, previous["version"], timeout)
    except (DeployError, OSError) as exc:
        return {**base, "status": "failed", "live": live and live["version"], "message": f"rollback failed: {exc}"}
    result = {**base, "status": "rolled_back", "live": previous["version"], "message": "manual rollback"}
    return _conclude(s, record, result, {**previous, "ref": ref, "deployed_at": _now()}, live)


def resume(timeout: float = 180.0) -> dict[str, Any]:
    """Docker: start the live version's container again (after `make compose-down`); local: nothing to do."""
    s = settings()
    live = read_record(s).get("live")
    if not live or live["backend"] != "docker":
        return {"status": "unchanged", "live": live and live["version"], "message": "no container to resume"}
    be = DockerBackend(s)
    try:
        be.restore(live["version"], live["version"])
        wait_available(s.serving_url, live["version"], timeout)
    except DeployError as exc:
        return {"status": "failed", "live": None, "message": f"resuming version {live['version']} failed: {exc}"}
    return {"status": "resumed", "live": live["version"], "message": f"version {live['version']} is serving again"}


def status(s: Settings) -> dict[str, Any]:
    """The deploy record, and the model card of every version in it that has one
    (tfx_modules/reporting/model_card.py)."""
    record = read_record(s)
    entries = [record.get("live"), record.get("previous"), *record.get("history", [])]
    versions = sorted({e["version"] for e in entries if e and e.get("version") is not None}, reverse=True)
    cards = {str(v): str(s.model_card(v)) for v in versions if s.model_card(v).is_file()}
    return {**record, "model_cards": cards}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Deploy a blessed model to serving, or roll back.")
    sub = parser.add_subparsers(dest="command", required=True)
    dep = sub.add_parser("deploy")
    dep.add_argument("--version", type=int)
    dep.add_argument("--backend", choices=("docker", "local"))
    sub.add_parser("rollback")
    sub.add_parser("resume")
    sub.add_parser("status")
    args = parser.parse_args(argv)
    permissions.keep_private(settings().home)
    if args.command == "status":
        print(json.dumps(status(settings()), indent=2))
        return 0
    commands = {"deploy": lambda: redeploy(args.version, args.backend), "rollback": rollback, "resume": resume}
    result = commands[args.command]()
    print(json.dumps(result, indent=2))
    succeeded = {"deploy": ("deployed", "unchanged"), "rollback": ("rolled_back",), "resume": ("resumed", "unchanged")}
    return 0 if result["status"] in succeeded[args.command] else 1


if __name__ == "__main__":
    sys.exit(main())
