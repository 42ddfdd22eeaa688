"""A rollout's stage machine as the gateway runs it: shadow, canary steps, then promoted or rolled back.

The controller (serving/rollout_controller.py) starts the challenger and writes the rollout's state to
`<CREDIT_RISK_HOME>/rollout/rollout.json`:
`{"id", "version", "challenger": url, "challenger_grpc": host:port | null, "stage": "shadow" | "canary" | "promoted"
| "rolled_back", "weight": percent, "shadow_share", "controller": {"pid", "host"}, "reason", "numbers",
"history": [...]}`.
The gateway re-reads it like its routes file. In shadow it mirrors requests to the challenger off the request path
(the client gets the champion's answer); in canary `challenger_answers()` sends a sticky `weight` percent of
applicants to the challenger. Every change of stage or weight starts fresh figures (serving/rollout_analysis.py),
judged on every status call and every half second: a breach makes the gateway write `rolled_back` with the reason
and numbers itself, so every request goes back to the champion within a second even with no controller running.

The state survives a crash: a gateway killed with kill -9 and started again resumes at the recorded stage while its
controller still runs, and rolls back when the controller is gone (nobody would finish the rollout).
Standard library only: the gateway runs from either environment.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from serving import metrics
from serving.rollout_analysis import Limits, StageStats, breaches, summary

log = logging.getLogger("serving.rollout")
ACTIVE = ("shadow", "canary")
STAGE_CODES = {"idle": 0, "shadow": 1, "canary": 2, "promoted": 3, "rolled_back": -1}
STAGE = "credit_risk_rollout_stage"  # gauge: STAGE_CODES of the current rollout
WEIGHT = "credit_risk_rollout_canary_weight"  # gauge: percent of applicants the challenger answers
STAGE_STARTED = "credit_risk_rollout_stage_started_seconds"  # gauge: Unix time the current stage began (0 idle)
ROLE_REQUESTS = "credit_risk_rollout_requests"  # counter; labels role (champion | challenger), outcome (ok | error)
ROLE_LATENCY = "credit_risk_rollout_request_latency"  # histogram in microseconds; label role
ROLLED_BACK = "credit_risk_rollout_rolled_back_seconds"  # gauge: Unix time of a rollback; labels version, reason
JUDGE_SECONDS = 0.5


def challenger_answers(rollout_id: str, application_id: str, weight: float) -> bool:
    """Whether the challenger answers this application in a canary at `weight` percent. Sticky: the same
    application gets the same model throughout a rollout, and one on the challenger stays there as the weight
    grows. The one routing decision, shared by every front end of the gateway (REST, gRPC)."""
    digest = hashlib.sha256(f"{rollout_id}/{application_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000 < weight * 100


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def read_state(path: Path) -> dict[str, Any]:
    """The recorded rollout ({} when there is none or the file is unreadable)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def update_state(path: Path, change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> dict[str, Any]:
    """Read, change and replace the state under a file lock (the controller and the gateway both write it);
    `change` returns the new state, or None to keep it. Returns the state as it now is."""
    with _locked(path):
        doc = read_state(path)
        new = change(doc)
        if new is None:
            return doc
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(new, indent=2) + "\n")
        tmp.replace(path)
        return new


def controller_alive(doc: dict[str, Any]) -> bool:
    """Whether the process driving the rollout still runs (one on another host is taken to)."""
    owner = doc.get("controller") or {}
    if owner.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(owner.get("pid", 0)) or -1, 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def roll_back(path: Path, rollout_id: str, reason: str, numbers: dict[str, Any] | None) -> dict[str, Any]:
    """Record that rollout `rollout_id` rolled back (unless it already ended); returns the state."""

    def change(doc: dict[str, Any]) -> dict[str, Any] | None:
        if doc.get("id") != rollout_id or doc.get("stage") not in ACTIVE:
            return None
        ended = {"stage": doc["stage"], "weight": doc.get("weight"), "verdict": "breach", "numbers": numbers}
        history = [*doc.get("history", []), ended]
        return {**doc, "stage": "rolled_back", "reason": reason, "numbers": numbers, "history": history}

    return update_state(path, change)


class GatewayRollout:
    """The gateway's side: the current state, its stage's figures, the verdict."""

    def __init__(self, path: Path, registry: metrics.Registry, limits: Limits) -> None:
        self.path, self.registry, self.limits = path, registry, limits
        self.state: dict[str, Any] = {}
        self.stats = StageStats()
        self._key: tuple[Any, ...] = ()
        self._stamp: tuple[int, int] | None = None
        self._judged = 0.0
        self._started = False
        registry.set(STAGE, {}, 0.0)

    def active(self) -> dict[str, Any] | None:
        """The rollout in shadow or canary, if any."""
        return self.state if self.state.get("stage") in ACTIVE else None

    def reload(self) -> None:
        """Re-read the state file if it changed; a new stage or weight starts fresh figures. At the gateway's start
        a rollout whose controller is gone is rolled back."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self.state = {}
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        self._stamp, doc = stamp, read_state(self.path)
        if not self._started and doc.get("stage") in ACTIVE and not controller_alive(doc):
            doc = roll_back(self.path, doc["id"], "its controller stopped while the gateway was down", None)
        self._started = True
        key = (doc.get("id"), doc.get("stage"), doc.get("weight"))
        if key != self._key:
            self._key, self.stats = key, StageStats()
            log.info("rollout %s of version %s: %s at %s%%", key[0], doc.get("version"), key[1], key[2])
            self.registry.set(STAGE_STARTED, {}, time.time() if doc.get("stage") in ACTIVE else 0.0)
            if doc.get("stage") == "rolled_back":  # by this gateway or by the controller: the alert's text
                labels = {"version": str(doc.get("version")), "reason": str(doc.get("reason"))}
                self.registry.set(ROLLED_BACK, labels, time.time())
        self.state = doc
        self.registry.set(STAGE, {}, float(STAGE_CODES.get(str(doc.get("stage")), 0)))
        self.registry.set(WEIGHT, {}, float(doc.get("weight") or 0) if doc.get("stage") == "canary" else 0.0)

    def answered(self, role: str, latency_s: float, ok: bool) -> None:
        self.stats.answered(role, latency_s * 1e3, ok)
        self.registry.inc(ROLE_REQUESTS, {"role": role, "outcome": "ok" if ok else "error"})
        if ok:
            self.registry.observe(ROLE_LATENCY, {"role": role}, latency_s * 1e6)

    def judge(self) -> dict[str, Any]:
        """The stage's numbers and breaches; a breach rolls the rollout back at once."""
        active = self.active()
        numbers = self.stats.numbers()
        found = breaches(numbers, self.limits) if active else []
        if active and found:
            reason = "; ".join(found)
            log.error("rollout %s of version %s rolled back: %s", active["id"], active.get("version"), reason)
            self.state = roll_back(self.path, active["id"], reason, numbers)
            self._stamp = None  # read our own write as a change
            self.reload()
        self._judged = time.monotonic()
        return {"state": self.state, "numbers": numbers, "summary": summary(numbers), "breaches": found}

    def tick(self) -> None:
        """The gateway's watch loop: pick up state changes, judge every JUDGE_SECONDS while a rollout runs."""
        self.reload()
        if self.active() and time.monotonic() - self._judged >= JUDGE_SECONDS:
            self.judge()
