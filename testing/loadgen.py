"""Steady request load against a predict endpoint, counting failures (swap tests and the benchmark)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx

from common.config import MODEL_NAME


@dataclass
class SteadyLoad:
    """Send `body` back to back from one thread until stopped; any non-200 or transport error is a failure."""

    url: str
    body: bytes
    model: str = MODEL_NAME
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> SteadyLoad:
        self._thread = threading.Thread(target=self._run, name="steady-load", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _run(self) -> None:
        path = f"/v1/models/{self.model}:predict"
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self._stop.is_set():
                start = time.perf_counter()
                try:
                    r = http.post(path, content=self.body, headers={"Content-Type": "application/json"})
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                self.latencies.append(time.perf_counter() - start)
                if r.status_code == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"HTTP {r.status_code}: {r.text[:200]}")
