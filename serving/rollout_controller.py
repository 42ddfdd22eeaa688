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
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from common import permissions
from common.config import Settings, settings
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


def _start_challenger(s: Settings, version_dir: Path) -> tuple[subprocess.Popen, str]:
    """A model server on a free port serving a copy of the version (the Pusher's copy stays untouched)."""
    folder = s.state_dir / "rollout-challenger"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(version_dir, folder / version_dir.name)
    return process.start_child("serving.server", "--model-dir", str(folder), "--poll-seconds", "0", "--grpc-port", "0")


def _wait_gateway_left(s: Settings, challenger: str, timeout: float = 30.0) -> None:
    """Until the gateway follows no rollout and has no request under way on the challenger."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        judged, status = _gateway(s), _gateway(s, "status")
        idle = judged.get("state", {}).get("stage") not in ACTIVE
        if idle and not status.get("in_flight", {}).get(challenger):
            return
        time.sleep(0.1)


def rollout(
    version_dir: Path,
    stages: tuple[str, ...],
    shadow_requests: int,
    canary_steps: tuple[int, ...],
    step_requests: int,
    stage_seconds: float,
    challenger_url: str | None = None,
) -> dict[str, Any]:
    """Run the rollout; {"status": "promoted" | "rolled_back", "version", "reason", "numbers", "line"}."""
    s = settings()
    version_dir = version_dir.resolve()
    version = int(version_dir.name) if version_dir.name.isdigit() else -1
    if version < 0 or not (version_dir / "saved_model.pb").is_file() or version_dir.parent != s.model_dir.resolve():
        raise RolloutError(f"{version_dir} is not a pushed SavedModel version under {s.model_dir}")
    if stages == ("direct",):
        result = deploy.redeploy(version)
        ok = result["status"] in ("deployed", "unchanged")
        return _result(version, "promoted" if ok else "rolled_back", result["message"], None)
    if set(stages) - {"shadow", "canary"} or not stages:
        raise RolloutError(f"stages {','.join(stages)}: expected shadow and/or canary, or direct")
    current = read_state(s.rollout_state)
    if current.get("stage") in ACTIVE:
        raise RolloutError(f"rollout {current['id']} of version {current.get('version')} is still {current['stage']}")
    proc = None
    if challenger_url is None:
        proc, challenger_url = _start_challenger(s, version_dir)
    try:
        deploy.wait_available(challenger_url, version, 120)  # its answers are for the stages to judge
        return _stages(s, version, challenger_url, stages, shadow_requests, canary_steps, step_requests, stage_seconds)
    finally:
        if proc is not None:
            _wait_gateway_left(s, challenger_url)
            process.stop_child(proc)


def _stages(
    s: Settings,
    version: int,
    challenger: str,
    stages: tuple[str, ...],
    shadow_requests: int,
    canary_steps: tuple[int, ...],
    step_requests: int,
    stage_seconds: float,
) -> dict[str, Any]:
    rollout_id = uuid.uuid4().hex[:12]
    first = stages[0]
    doc = {
        "id": rollout_id,
        "version": version,
        "challenger": challenger.rstrip("/"),
        "challenger_grpc": process.grpc_address(challenger),  # None: the gateway's gRPC calls stay on the champion
        "stage": first,
        "weight": 0 if first == "shadow" else canary_steps[0],
        "shadow_share": s.rollout_shadow_share,
        "controller": {"pid": os.getpid(), "host": socket.gethostname()},
        "started_at": time.time(),
        "reason": None,
        "numbers": None,
        "history": [],
    }
    update_state(s.rollout_state, lambda _: doc)
    plan = [("shadow", 0, shadow_requests)] if "shadow" in stages else []
    plan += [("canary", w, step_requests) for w in canary_steps] if "canary" in stages else []
    numbers: dict[str, Any] = {}
    for stage, weight, needed in plan:
        print(f"{stage}{f' {weight}%' if stage == 'canary' else ''}: waiting for {needed} requests", flush=True)
        outcome = run_stage(s, rollout_id, stage, weight, needed, stage_seconds)
        if not outcome["passed"]:
            reason = outcome.get("reason") or f"rollout {rollout_id} ended elsewhere"
            return _result(version, "rolled_back", reason, outcome.get("numbers"))
        numbers = outcome["numbers"]
        print(f"{stage}{f' {weight}%' if stage == 'canary' else ''}: passed ({summary(numbers)})", flush=True)
    swapped = deploy.redeploy(version)
    if swapped["status"] not in ("deployed", "unchanged"):
        reason = f"promotion failed: {swapped['message']}"
        return _result(
            version, "rolled_back", reason, roll_back(s.rollout_state, rollout_id, reason, numbers)["numbers"]
        )
    update_state(s.rollout_state, lambda doc: {**doc, "stage": "promoted"} if doc.get("id") == rollout_id else None)
    return _result(version, "promoted", swapped["message"], numbers)


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
            tuple(p.strip() for p in args.stages.split(",") if p.strip()),
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
