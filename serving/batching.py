"""Request batching as TF Serving's `--enable_batching` does it, for REST and gRPC alike.

Concurrent requests for one signature of one version join an open batch until it holds `max_batch_size` rows or
its oldest row has waited `batch_timeout_micros`; `num_batch_threads` threads run the closed batches, each as one
call of the signature, padded up to the next of `allowed_batch_sizes`, and split back per request. At most
`max_enqueued_batches` batches wait per signature: past that a request is refused at once with TF Serving's message
(UNAVAILABLE / HTTP 503), never queued without bound. A request larger than `max_batch_size` runs alone. If a merged
batch fails, each of its requests is run alone, so one bad request never fails its neighbours.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import text_format

from serving import metrics, tf_serving_config

log = logging.getLogger(__name__)
BATCH_SIZE = ":tensorflow:serving:batching_session:processed_batch_size"  # histogram, label: signature
QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"  # TF Serving's message
BATCH_SIZE_BUCKETS: tuple[float, ...] = tuple(float(2**i) for i in range(13))  # 1 .. 4096 rows

Columns = dict[str, np.ndarray]


class QueueFull(Exception):
    """The signature's queue holds max_enqueued_batches already (TF Serving's UNAVAILABLE, HTTP 503)."""


@dataclass(frozen=True)
class Parameters:
    max_batch_size: int = 256
    batch_timeout_micros: int = 2000
    max_enqueued_batches: int = 100
    num_batch_threads: int = 2
    allowed_batch_sizes: tuple[int, ...] = ()

    @classmethod
    def read(cls, path: Path) -> Parameters:
        """The BatchingParameters text proto at `path` (TF Serving's defaults for fields it leaves out)."""
        proto = text_format.Parse(path.read_text(), tf_serving_config.BatchingParameters())
        given = {
            name: getattr(proto, name).value
            for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads")
            if proto.HasField(name)
        }
        params = cls(**given, allowed_batch_sizes=tuple(proto.allowed_batch_sizes))
        if params.allowed_batch_sizes and params.allowed_batch_sizes[-1] != params.max_batch_size:
            raise ValueError("the last of allowed_batch_sizes must equal max_batch_size (TF Serving's rule)")
        return params

    def padded(self, size: int) -> int:
        return next((s for s in self.allowed_batch_sizes if s >= size), size)


@dataclass
class _Task:
    columns: Columns
    rows: int
    future: Future = field(default_factory=Future)


@dataclass
class _Batch:
    key: tuple[Any, ...]
    fn: Any  # the signature: Columns -> dict of outputs
    deadline: float
    tasks: list[_Task] = field(default_factory=list)
    rows: int = 0


class Batcher:
    """Merges concurrent calls of one signature; `submit` returns a Future of that call's outputs."""

    def __init__(self, params: Parameters, registry: metrics.Registry) -> None:
        self.params = params
        self.registry = registry
        self._cond = threading.Condition()
        self._open: dict[tuple[Any, ...], _Batch] = {}  # the batch each signature's requests join
        self._closed: deque[_Batch] = deque()  # full or timed out: waiting for a batch thread
        self._waiting: dict[tuple[Any, ...], int] = {}  # batches per signature not yet taken by a thread
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._work, name=f"batch-{i}", daemon=True) for i in range(params.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, key: tuple[Any, ...], fn: Any, columns: Columns) -> Future:
        """Queue `columns` (one request's rows) for `fn`, the signature `key` names (model, version, signature)."""
        task = _Task(columns, len(next(iter(columns.values()))))
        with self._cond:
            batch = self._open.get(key)
            if batch is not None and batch.rows + task.rows > self.params.max_batch_size:
                self._close(batch)
                batch = None
            if batch is None:
                if self._waiting.get(key, 0) >= self.params.max_enqueued_batches:
                    raise QueueFull(QUEUE_FULL)
                batch = _Batch(key, fn, time.monotonic() + self.params.batch_timeout_micros / 1e6)
                self._open[key] = batch
                self._waiting[key] = self._waiting.get(key, 0) + 1
            batch.tasks.append(task)
            batch.rows += task.rows
            if batch.rows >= self.params.max_batch_size:  # full, or one request over the size: runs alone
                self._close(batch)
            self._cond.notify()
        return task.future

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)

    def _close(self, batch: _Batch) -> None:
        if self._open.get(batch.key) is batch:
            del self._open[batch.key]
            self._closed.append(batch)

    def _next(self) -> _Batch | None:
        """The next batch to run (None when stopping); waits for one to fill or time out. Holds no lock on return."""
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                for batch in [b for b in self._open.values() if b.deadline <= now]:
                    self._close(batch)
                if self._closed:
                    batch = self._closed.popleft()
                    self._waiting[batch.key] -= 1
                    return batch
                deadlines = [b.deadline for b in self._open.values()]
                self._cond.wait(max(0.0, min(deadlines) - now) if deadlines else None)
        return None

    def _work(self) -> None:
        while (batch := self._next()) is not None:
            self._run(batch)

    def _run(self, batch: _Batch) -> None:
        self.registry.observe(BATCH_SIZE, {"signature": str(batch.key[-1])}, batch.rows, BATCH_SIZE_BUCKETS)
        try:
            outputs = batch.fn(self._merged(batch))
        except Exception as exc:
            if len(batch.tasks) == 1:
                batch.tasks[0].future.set_exception(exc)
                return
            for task in batch.tasks:  # find the request the graph rejected: the others still get their answers
                self._run(_Batch(batch.key, batch.fn, 0.0, [task], task.rows))
            return
        start = 0
        for task in batch.tasks:
            task.future.set_result({name: value[start : start + task.rows] for name, value in outputs.items()})
            start += task.rows

    def _merged(self, batch: _Batch) -> Columns:
        """The tasks' columns one after another, padded with copies of the first row to an allowed batch size."""
        pad = self.params.padded(batch.rows) - batch.rows
        names = batch.tasks[0].columns
        return {
            name: np.concatenate(
                [task.columns[name] for task in batch.tasks] + [np.repeat(batch.tasks[0].columns[name][:1], pad)]
            )
            for name in names
        }
