"""Roll a pushed model version out through the gateway: shadow, canary steps, promote; roll back on any breach.

    python -m serving.rollout_controller VERSION_DIR [--stages shadow,canary] [--shadow-requests N]
        [--canary-steps 5,25,100] [--step-requests N] [--stage-seconds S] [--challenger-url URL]

Local stack: the challenger is a second model server on a free port serving a copy of VERSION_DIR (or an already
running one at --challenger-url). Each stage is written to the rollout state (serving/rollout.py), which the
gateway follows and judges; this process waits for the stage's request count, bounded by --stage-seconds (too
little traffic ends in a rollback that says so, never a hang), and prints one progress line per stage. A stage
that has its requests does not pass while a live-drift alert fires on the local Prometheus (held, then rolled
back at the time limit). Promotion is today's swap (serving/deploy.py: the live model server takes the version,
the deploy record notes it), then the gateway goes back to the live server and the challenger is stopped once
its requests under way finish.
`--stages direct` is the swap alone. The last line is `promoted version <v> (...)` or
`rolled back version <v>: <reason> (...)`; the exit code is 0 only when promoted. A rollback sets
`credit_risk_rollout_rolled_back_seconds` on the gateway, which an alert rule sends by email and Slack.
Standard library only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from common import permissions
from common.config import Settings, settings
from common.records.deploy_record import read_record
from serving import client, deploy, process
from serving.rollout import ACTIVE, read_state, roll_back, update_state
from serving.rollout_analysis import summary

POLL_SECONDS = 0.5
HOLDING_ALERTS = ("LiveDriftDetected", "LiveScoreDrift")  # monitoring/rules/alerts.yml: live traffic has drifted


class RolloutError(Exception):
    pass


def _gateway(s: Settings, what: str = "rollout") -> dict[str, Any]:
    """The gateway's judgement of the current stage, or its route (`status`); {} while it does not answer."""
    try:
        judged = client.request(f"{s.serving_url.rstrip('/')}/gateway/{what}", timeout=10)
    except client.ServingError:
        return {}
    return judged if isinstance(judged, dict) else {}


def drift_alerts(s: Settings) -> list[str]:
    """The live-drift alerts firing on the local Prometheus ([] when it does not answer: nothing to hold on)."""
    try:
        found = client.request(f"http://127.0.0.1:{s.prometheus_port}/api/v1/alerts", timeout=5)
        alerts = found["data"]["alerts"]
    except (client.ServingError, KeyError, TypeError):
        return []
    return sorted({a["labels"]["alertname"] for a in alerts if a.get("state") == "firing"} & set(HOLDING_ALERTS))


def _stage_count(stage: str, judged: dict[str, Any]) -> int:
    """What a stage counts: paired predictions in shadow, requests through the gateway in a canary step."""
    numbers = judged.get("numbers") or {}
    if stage == "shadow":
        return int(numbers.get("pairs", 0))
    return sum(int((numbers.get(role) or {}).get("requests", 0)) for role in ("champion", "challenger"))


def _set_stage(s: Settings, rollout_id: str, stage: str, weight: int) -> bool:
    """Move the rollout on; False when it has ended meanwhile (the gateway rolled it back)."""

    def change(doc: dict[str, Any]) -> dict[str, Any] | None:
        if doc.get("id") != rollout_id or doc.get("stage") not in ACTIVE:
            return None
        return {**doc, "stage": stage, "weight": weight}

    return update_state(s.rollout_state, change).get("stage") == stage


def _passed(s: Settings, rollout_id: str, judged: dict[str, Any]) -> None:
    def change(doc: dict[str, Any]) -> dict[str, Any] | None:
        if doc.get("id") != rollout_id:
            return None
        entry = {"stage": doc["stage"], "weight": doc.get("weight"), "verdict": "pass", "numbers": judged["numbers"]}
        return {**doc, "history": [*doc.get("history", []), entry]}

    update_state(s.rollout_state, change)


def run_stage(s: Settings, rollout_id: str, stage: str, weight: int, needed: int, seconds: float) -> dict[str, Any]:
    """Hold a stage until it has `needed` requests and the gateway finds no breach; {"passed": bool, ...}."""
    if not _set_stage(s, rollout_id, stage, weight):
        return {"passed": False, **read_state(s.rollout_state)}
    deadline = time.monotonic() + seconds
    time.sleep(POLL_SECONDS)  # the gateway picks the change up within its reload interval
    judged: dict[str, Any] = {}
    holding = ""
    while True:
        state = read_state(s.rollout_state)
        if state.get("id") != rollout_id or state.get("stage") != stage or state.get("weight") != weight:
            return {"passed": False, **state}
        judged = _gateway(s) or judged
        counted = judged.get("state", {}).get("weight") == weight and _stage_count(stage, judged) >= needed
        if counted and not judged.get("breaches"):
            held = drift_alerts(s)
            if not held:
                _passed(s, rollout_id, judged)
                return {"passed": True, "numbers": judged["numbers"]}
            if not holding:
                print(f"{stage}: held while the live-drift alert {', '.join(held)} fires", flush=True)
            holding = f"held by the live-drift alert {', '.join(held)}"
        if time.monotonic() > deadline:
            count = _stage_count(stage, judged) if judged else 0
            reason = holding or f"too little traffic: {count} of {needed} in {seconds:.0f}s of {stage}"
            return {"passed": False, **roll_back(s.rollout_state, rollout_id, reason, judged.get("numbers"))}
        time.sleep(POLL_SECONDS)


def _start_challenger(s: Settings, version: int, version_dir: Path) -> tuple[dict[str, Any], str]:
    """The challenger, and what stops it: with the docker backend, the idle model container with the version's
    image (promotion then only moves the gateway to it); else a model server on a free port serving a copy of the
    version (the Pusher's copy stays untouched), in a session of its own, as the DAG's stages are separate tasks."""
    if s.deploy_backend == "docker":
        backend = deploy.DockerBackend(s)
        slot = backend.idle_slot()
        backend.build(version)
        backend.start(slot, version)
        return {"challenger_slot": slot, "challenger_grpc": backend.slot_grpc(slot)}, backend.slot_url(slot)
    folder = s.state_dir / "rollout-challenger"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(version_dir, folder / version_dir.name)
    log = s.state_dir / "rollout-challenger.log"
    args = ("--model-dir", str(folder), "--poll-seconds", "0", "--grpc-port", "0")
    pid, url = process.start_detached(str(s.ml_python), "serving.server", *args, log=log)
    return {"challenger_pid": pid, "challenger_grpc": process.grpc_address(url)}, url


def _stop_challenger(s: Settings, doc: dict[str, Any]) -> None:
    """Stop what `_start_challenger` started (a promoted container is the live one now: it stays)."""
    if doc.get("challenger_pid"):
        process.stop_pid(int(doc["challenger_pid"]))
    elif doc.get("challenger_slot") and read_state(s.rollout_state).get("stage") != "promoted":
        deploy.DockerBackend(s).stop(doc["challenger_slot"])


def _wait_gateway_left(s: Settings, challenger: str, timeout: float = 30.0) -> None:
    """Until the gateway follows no rollout and has no request under way on the challenger."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        judged, status = _gateway(s), _gateway(s, "status")
        idle = judged.get("state", {}).get("stage") not in ACTIVE
        if idle and not status.get("in_flight", {}).get(challenger):
            return
        time.sleep(0.1)


def _controller_pid(started: dict[str, Any], driven_by_challenger: bool) -> int:
    """The process whose end means nobody will finish the rollout: this one, or the DAG's local challenger (a
    container challenger's controller is the DAG run itself, on another host as the gateway sees it)."""
    return int(started.get("challenger_pid") or os.getpid()) if driven_by_challenger else os.getpid()


def parse_stages(stages: str) -> tuple[str, ...]:
    """ "shadow,canary", "shadow", "canary" or "direct" as a tuple; RolloutError for anything else."""
    found = tuple(p.strip() for p in stages.split(",") if p.strip())
    if found != ("direct",) and (not found or set(found) - {"shadow", "canary"}):
        raise RolloutError(f"stages {','.join(found)}: expected shadow and/or canary, or direct")
    return found


def check_shadow_requests(s: Settings, stages: tuple[str, ...], requests: int) -> None:
    """A shadow stage must wait for rollout_min_pairs pairs at least: below them the scores are never compared."""
    if "shadow" in stages and requests < s.rollout_min_pairs:
        raise RolloutError(f"shadow requests {requests}: at least {s.rollout_min_pairs} (rollout_min_pairs)")


def version_of(s: Settings, version_dir: Path) -> int:
    """The version number of a pushed SavedModel version folder; RolloutError for anything else."""
    version_dir = version_dir.resolve()
    version = int(version_dir.name) if version_dir.name.isdigit() else -1
    if version < 0 or not (version_dir / "saved_model.pb").is_file() or version_dir.parent != s.model_dir.resolve():
        raise RolloutError(f"{version_dir} is not a pushed SavedModel version under {s.model_dir}")
    return version


def begin(
    version_dir: Path,
    stages: tuple[str, ...],
    canary_steps: tuple[int, ...],
    challenger_url: str | None = None,
    driven_by_challenger: bool = False,
) -> dict[str, Any]:
    """Start the challenger (unless one runs at `challenger_url`) and record the rollout at its first stage; returns
    the state. Its controller, whose end means nobody will finish the rollout, is this process, or with
    `driven_by_challenger` the challenger (the DAG's stages are tasks of their own; its teardown stops it)."""
    s = settings()
    version = version_of(s, version_dir)
    current = read_state(s.rollout_state)
    if current.get("stage") in ACTIVE:
        raise RolloutError(f"rollout {current['id']} of version {current.get('version')} is still {current['stage']}")
    started: dict[str, Any] = {"challenger_grpc": None}  # a challenger given by URL: gRPC calls stay on the champion
    if challenger_url is None:
        started, challenger_url = _start_challenger(s, version, version_dir.resolve())
    try:
        deploy.wait_available(challenger_url, version, 120)  # its answers are for the stages to judge
    except deploy.DeployError:
        _stop_challenger(s, started)
        raise
    doc = {
        "id": uuid.uuid4().hex[:12],
        "version": version,
        "challenger": challenger_url.rstrip("/"),
        **started,
        "stages": list(stages),
        "shadow_share": s.rollout_shadow_share,
        "controller": {"pid": _controller_pid(started, driven_by_challenger), "host": socket.gethostname()},
        "started_at": time.time(),
        "reason": None,
        "numbers": None,
        "history": [],
    }
    first, weight = plan(doc, canary_steps)[0]
    return update_state(s.rollout_state, lambda _: {**doc, "stage": first, "weight": weight})


def plan(doc: dict[str, Any], canary_steps: tuple[int, ...]) -> list[tuple[str, int]]:
    """The rollout's (stage, weight) steps in order: shadow at 0, then each canary step."""
    steps = [("shadow", 0)] if "shadow" in doc["stages"] else []
    return steps + ([("canary", w) for w in canary_steps] if "canary" in doc["stages"] else [])


def stage(
    doc: dict[str, Any], name: str, weight: int, shadow_requests: int, step_requests: int, seconds: float
) -> dict[str, Any]:
    """Run one step of the rollout `doc` (it waits for `shadow_requests` pairs in shadow, `step_requests` requests in
    a canary step) with a progress line before and after; {"passed", "numbers", "line"}, where "line" is the
    rollout's last line when it rolled back."""
    s = settings()
    needed = shadow_requests if name == "shadow" else step_requests
    label = f"{name}{f' {weight}%' if name == 'canary' else ''}"
    print(f"{label}: waiting for {needed} requests", flush=True)
    outcome = run_stage(s, doc["id"], name, weight, needed, seconds)
    if not outcome["passed"]:
        reason = outcome.get("reason") or f"rollout {doc['id']} ended elsewhere"
        return {"passed": False, **_result(doc["version"], "rolled_back", reason, outcome.get("numbers"))}
    print(f"{label}: passed ({summary(outcome['numbers'])})", flush=True)
    return {"passed": True, "numbers": outcome["numbers"]}


def promote(doc: dict[str, Any]) -> dict[str, Any]:
    """The swap (serving/deploy.py) once every stage passed, judged by the last stage's numbers; a rollout that
    ended meanwhile (the gateway rolled it back) is not promoted, and a failed swap rolls it back."""
    s = settings()
    state = read_state(s.rollout_state)
    if state.get("id") != doc["id"] or state.get("stage") not in ACTIVE:
        reason = state.get("reason") or f"rollout {doc['id']} ended before its promotion"
        return _result(doc["version"], "rolled_back", reason, state.get("numbers"))
    numbers = (state.get("history") or [{}])[-1].get("numbers")
    swapped = deploy.redeploy(doc["version"])
    if swapped["status"] not in ("deployed", "unchanged"):
        reason = f"promotion failed: {swapped['message']}"
        rolled = roll_back(s.rollout_state, doc["id"], reason, numbers)
        return _result(doc["version"], "rolled_back", reason, rolled["numbers"])
    update_state(s.rollout_state, lambda d: {**d, "stage": "promoted"} if d.get("id") == doc["id"] else None)
    return _result(doc["version"], "promoted", swapped["message"], numbers)


def close(doc: dict[str, Any], why: str = "") -> None:
    """End what the rollout started: roll it back if it is still under way (`why`: because its driver stopped), then
    stop its challenger once the gateway has left it and its calls under way finished."""
    s = settings()
    if why and read_state(s.rollout_state).get("id") == doc["id"]:
        roll_back(s.rollout_state, doc["id"], why, None)
    if doc.get("challenger_pid") or doc.get("challenger_slot"):
        _wait_gateway_left(s, doc["challenger"])
        _stop_challenger(s, doc)


def begin_version(version: int, stages: str) -> dict[str, Any]:
    """The retraining DAG's start of a rollout of pushed `version`: the state of a staged rollout driven by its
    challenger, or {"direct": True, "version", "why"} when the swap alone is asked for or nothing serves yet (no
    champion to judge against)."""
    s = settings()
    wanted = parse_stages(stages)
    if wanted == ("direct",) or not read_record(s).get("live"):
        why = "rollout=direct" if wanted == ("direct",) else "no model serves yet: nothing to judge it against"
        return {"direct": True, "version": version, "stages": [], "why": why}
    check_shadow_requests(s, wanted, s.rollout_shadow_requests)
    doc = begin(s.model_dir / str(version), wanted, s.rollout_canary_steps, driven_by_challenger=True)
    return {**doc, "direct": False}


def settings_stage(doc: dict[str, Any], name: str, weight: int) -> dict[str, Any]:
    """`stage()` with the settings' request count and time limit (the DAG's stage tasks)."""
    s = settings()
    return stage(doc, name, weight, s.rollout_shadow_requests, s.rollout_step_requests, s.rollout_stage_seconds)


def rollout(
    version_dir: Path,
    stages: tuple[str, ...],
    shadow_requests: int,
    canary_steps: tuple[int, ...],
    step_requests: int,
    stage_seconds: float,
    challenger_url: str | None = None,
) -> dict[str, Any]:
    """Run the rollout of `stages` (parse_stages'); {"status": "promoted" | "rolled_back", "version", "reason",
    "numbers", "line"}."""
    s = settings()
    check_shadow_requests(s, stages, shadow_requests)
    if stages == ("direct",):
        version = version_of(s, version_dir)
        result = deploy.redeploy(version)
        ok = result["status"] in ("deployed", "unchanged")
        return _result(version, "promoted" if ok else "rolled_back", result["message"], None)
    doc = begin(version_dir, stages, canary_steps, challenger_url)
    try:
        for name, weight in plan(doc, canary_steps):
            outcome = stage(doc, name, weight, shadow_requests, step_requests, stage_seconds)
            if not outcome["passed"]:
                return outcome
        return promote(doc)
    finally:
        close(doc, "the rollout command stopped before the rollout ended")


def _result(version: int, status: str, reason: str, numbers: dict[str, Any] | None) -> dict[str, Any]:
    figures = summary(numbers) if numbers else "no live figures"
    if status == "promoted":
        line = f"promoted version {version} ({figures}; {reason})"
    else:
        line = f"rolled back version {version}: {reason} ({figures})"
    return {"status": status, "version": version, "reason": reason, "numbers": numbers, "line": line}


def main(argv: list[str] | None = None) -> int:
    s = settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version_dir", type=Path)
    parser.add_argument("--stages", default=",".join(s.rollout_stages))
    parser.add_argument("--shadow-requests", type=int, default=s.rollout_shadow_requests)
    parser.add_argument("--canary-steps", default=",".join(map(str, s.rollout_canary_steps)))
    parser.add_argument("--step-requests", type=int, default=s.rollout_step_requests)
    parser.add_argument("--stage-seconds", type=float, default=s.rollout_stage_seconds)
    parser.add_argument("--challenger-url", help="an already running challenger (else one is started)")
    args = parser.parse_args(argv)
    permissions.keep_private(s.home)
    try:
        steps = tuple(int(w) for w in args.canary_steps.split(",") if w.strip())
        if not steps or any(not 0 < w <= 100 for w in steps) or list(steps) != sorted(steps):
            raise RolloutError(f"canary steps {args.canary_steps}: expected rising percentages in 1..100")
        result = rollout(
            args.version_dir,
            parse_stages(args.stages),
            args.shadow_requests,
            steps,
            args.step_requests,
            args.stage_seconds,
            args.challenger_url,
        )
    except (RolloutError, deploy.DeployError, ValueError) as exc:
        print(f"rollout failed before it began: {exc}", file=sys.stderr)
        return 2
    print(result["line"], flush=True)
    return 0 if result["status"] == "promoted" else 1


if __name__ == "__main__":
    sys.exit(main())
