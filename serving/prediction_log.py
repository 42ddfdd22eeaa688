"""The prediction log: every logged prediction as one JSON line in append-only, rotated segment files.

The gateway hands each answered predict call to `PredictionLog.submit()`, which only appends it to a bounded
in-memory queue: nothing is written on the request path. When the queue holds `capacity` predictions, further ones
are dropped and counted (`credit_risk_prediction_log_dropped`) and the request still succeeds. A writer thread wakes
every FLUSH_SECONDS, turns the queued calls into lines and appends them to the open segment with one write, so a
killed gateway (kill -9) loses at most the last FLUSH_SECONDS of predictions; a segment is fsynced when it is
closed. Past `rotate_bytes` a segment is closed and a new one begun; segments older than `retention_days` are
deleted. Folder 0700, files 0600, whatever the umask: the lines hold applicants' data.

A segment is `predictions-<UTC start>-<pid>.jsonl`, never reopened once closed, so a segment cut short by a crash
ends in at most one torn line, which readers skip. One line per instance:
`{"time": <Unix s>, "request_id", "application_id", "model", "version", "features": {...as sent}, "probability",
"label", "latency_ms"}`, during a rollout `role` (champion | challenger) and `shadow` (an answer no client got),
plus the attributions, reason codes and reasons of an `explain` call. Standard library
only: the gateway runs from either environment.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from common import permissions
from serving import metrics

log = logging.getLogger("serving.prediction_log")
SEGMENT = re.compile(r"predictions-\d{8}T\d{6}\d{6}Z-\d+\.jsonl")
FLUSH_SECONDS = 0.25
SWEEP_SECONDS = 3600.0  # how often retention is applied besides at start and at each rotation
LOGGED = "credit_risk_prediction_log_records"  # counter: predictions written
EXPLANATION = (
    "attributions",
    "reason_codes",
    "reasons",
)  # the explain signature's outputs (tfx_modules/evaluation/explain.py)
DROPPED = "credit_risk_prediction_log_dropped"  # counter; label reason: queue_full | write_error
QUEUED = "credit_risk_prediction_log_queued"  # gauge: predictions waiting for the writer
SEGMENTS = "credit_risk_prediction_log_segments"  # gauge: segment files kept


@dataclass(frozen=True)
class Call:
    """One answered predict call: the instances as sent (without application ids) and their predictions."""

    time: float
    request_id: str
    model: str
    version: int | None
    latency_ms: float
    application_ids: list[str]
    instances: list[dict[str, Any]]
    predictions: list[Any]
    role: str | None = None  # during a rollout (serving/rollout.py): champion | challenger
    shadow: bool = False  # a challenger's answer to a mirrored call: logged, compared, never sent to the client

    def lines(self) -> str:
        common = {"time": self.time, "request_id": self.request_id, "model": self.model, "version": self.version}
        if self.role is not None:
            common["role"] = self.role
        if self.shadow:
            common["shadow"] = True
        out = []
        for app_id, instance, prediction in zip(self.application_ids, self.instances, self.predictions, strict=True):
            answer = prediction if isinstance(prediction, dict) else {"probability": prediction}
            record = {
                **common,
                "application_id": app_id,
                "features": {
                    k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in instance.items()
                },
                "probability": answer.get("probability"),
                "label": answer.get("label"),
                "latency_ms": self.latency_ms,
                **{key: answer[key] for key in EXPLANATION if key in answer},
            }
            out.append(json.dumps(record, allow_nan=False) + "\n")
        return "".join(out)


def segments(folder: Path) -> list[Path]:
    """The log's segment files, oldest first (names start with their UTC start time)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if SEGMENT.fullmatch(p.name))


class PredictionLog:
    """The bounded queue and its writer thread; `start()` before the first `submit()`, `stop()` flushes."""

    def __init__(
        self,
        folder: Path,
        registry: metrics.Registry,
        *,
        sample: float = 1.0,
        rotate_bytes: int = 64 << 20,
        retention_days: float = 30.0,
        capacity: int = 100_000,
    ) -> None:
        self.folder, self.registry = folder, registry
        self.sample, self.rotate_bytes, self.retention_days, self.capacity = (
            sample,
            rotate_bytes,
            retention_days,
            capacity,
        )
        self._queue: deque[Call] = deque()
        self._queued = 0  # predictions in the queue (each call holds one per instance)
        self._lock = threading.Lock()  # guards _queued, changed by the request path and the writer
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._swept = 0.0
        for reason in ("queue_full", "write_error"):  # series exist from the start: increase() sees the first drop
            registry.inc(DROPPED, {"reason": reason}, 0)
        registry.inc(LOGGED, {}, 0)

    def sampled(self) -> bool:
        return self.sample >= 1.0 or random.random() < self.sample

    def submit(self, call: Call) -> bool:
        """Queue a call for the writer; False (and counted) when the queue is full. Never blocks, never raises."""
        size = len(call.instances)
        with self._lock:
            full = self._queued + size > self.capacity
            if not full:
                self._queued += size
                self._queue.append(call)
        if full:
            self.registry.inc(DROPPED, {"reason": "queue_full"}, size)
        return not full

    def start(self) -> None:
        """Create the folder owner-only, take group and other bits off what is in it (common/permissions.py: a
        folder an older version or another writer left readable), apply retention, start the writer."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        permissions.tighten(self.folder)
        self._sweep()
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued, fsync and close the segment."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._close()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(FLUSH_SECONDS)
            self._flush()
            if time.monotonic() - self._swept > SWEEP_SECONDS:
                self._sweep()
        self._flush()

    def _flush(self) -> None:
        with self._lock:
            calls = list(self._queue)
            self._queue.clear()
        count = sum(len(c.instances) for c in calls)
        with self._lock:
            self._queued -= count
        self.registry.set(QUEUED, {}, self._queued)
        chunks: list[bytes] = []
        pending = logged = 0
        rotated = False
        try:
            for position, c in enumerate(calls):
                chunks.append(c.lines().encode())
                pending += len(chunks[-1])
                if self._size + pending >= self.rotate_bytes or position == len(calls) - 1:
                    self._write(b"".join(chunks))
                    logged += sum(len(x.instances) for x in calls[position + 1 - len(chunks) : position + 1])
                    chunks, pending = [], 0
                if self._size >= self.rotate_bytes:
                    self._close()
                    rotated = True
        except (OSError, ValueError, TypeError) as exc:  # a full disk or an unserialisable value: count, go on
            log.error("prediction log: %d predictions not written: %s", count - logged, exc)
            self.registry.inc(DROPPED, {"reason": "write_error"}, count - logged)
        self.registry.inc(LOGGED, {}, logged)
        if rotated:
            self._sweep()

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            self._open()
        assert self._fd is not None
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._size += len(data)

    def _open(self) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        self._path = self.folder / f"predictions-{stamp}-{os.getpid()}.jsonl"
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        self._size = 0

    def _close(self) -> None:
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
            self._fd, self._path = None, None

    def _sweep(self) -> None:
        """Delete closed segments older than the retention period; never the open one."""
        self._swept = time.monotonic()
        cutoff = time.time() - self.retention_days * 86400
        kept = 0
        for path in segments(self.folder):
            try:
                if path != self._path and path.stat().st_mtime < cutoff:
                    path.unlink()
                    log.info("prediction log: %s is past retention (%g days), deleted", path.name, self.retention_days)
                    continue
            except FileNotFoundError:
                continue
            kept += 1
        self.registry.set(SEGMENTS, {}, kept)
