"""Airflow 3's REST API as the UI's trigger button uses it: log in, unpause, trigger a run with conf, follow it.

Standard library only, for any stack: the local one (scripts/airflow_local.py) and the compose one
(containers/stack.py) differ only in base URL and password.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TERMINAL = ("success", "failed")
FINAL_TASK_STATES = ("success", "failed", "skipped", "upstream_failed")
Report = Callable[[str], None]


def _quiet(line: str) -> None:
    """The default report: say nothing."""


@dataclass
class AirflowAPI:
    base_url: str
    user: str
    password: str
    _token: str | None = field(default=None, repr=False)

    def call(self, path: str, method: str = "GET", body: dict[str, Any] | None = None) -> dict[str, Any]:
        if self._token is None and path != "/auth/token":
            login = {"username": self.user, "password": self.password}
            self._token = self.call("/auth/token", "POST", login)["access_token"]
        request = urllib.request.Request(
            f"{self.base_url.rstrip('/')}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Content-Type": "application/json",
                **({"Authorization": f"Bearer {self._token}"} if self._token else {}),
            },
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")

    def wait_healthy(self, timeout: float) -> None:
        """Until /api/v2/monitor/health answers with a healthy metadata database and scheduler."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                health = self.call("/api/v2/monitor/health") if self._token else _open_health(self.base_url)
                if health["metadatabase"]["status"] == "healthy" and health["scheduler"]["status"] == "healthy":
                    return
            except (OSError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Airflow at {self.base_url} not healthy after {timeout:.0f}s")
            time.sleep(2)

    def unpause(self, dag_id: str, timeout: float = 120) -> None:
        """Unpause a DAG, waiting until the dag-processor has parsed it (the API answers 404 before that)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.call(f"/api/v2/dags/{dag_id}", "PATCH", {"is_paused": False})
                return
            except urllib.error.HTTPError as err:
                if err.code != 404 or time.monotonic() > deadline:
                    raise RuntimeError(f"cannot unpause {dag_id}: HTTP {err.code} {err.read()[:300]!r}") from None
            time.sleep(2)

    def wait_until_idle(self, dag_id: str, timeout: float, report: Report = _quiet, settle: float = 10) -> None:
        """Let runs already under way finish: a run started by the schedule, or by someone in the UI, would
        otherwise take a delivered batch from the run the caller triggers."""
        started, announced = time.monotonic(), False
        busy = f"/api/v2/dags/{dag_id}/dagRuns?state=queued&state=running"
        while (under_way := self.call(busy)["total_entries"]) or time.monotonic() - started < settle:
            if under_way and not announced:
                report(f"waiting for {under_way} run(s) of {dag_id} already under way")
                announced = True
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"{dag_id} still has runs under way after {timeout:.0f}s")
            time.sleep(2)

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        """Start a run now (logical date null, as the UI's button); returns its run id."""
        return self.call(f"/api/v2/dags/{dag_id}/dagRuns", "POST", {"logical_date": None, "conf": conf})["dag_run_id"]

    def clear(self, dag_id: str, run_id: str) -> None:
        """Run every task of a run again under its run id, as the UI's Clear button does."""
        self.call(f"{_run_path(dag_id, run_id)}/clear", "POST", {"dry_run": False})

    def run_url(self, dag_id: str, run_id: str) -> str:
        """The run's page in the Airflow UI."""
        return f"{self.base_url.rstrip('/')}/dags/{dag_id}/runs/{urllib.parse.quote(run_id, safe='')}"

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """The run as the API describes it: state, start_date, end_date, conf, ..."""
        return self.call(_run_path(dag_id, run_id))

    def task_hosts(self, dag_id: str, run_id: str) -> dict[str, str]:
        """Task id -> the host that ran it (Airflow records it as the task starts), for the tasks that ran."""
        tasks = self.call(f"{_run_path(dag_id, run_id)}/taskInstances?limit=100")["task_instances"]
        return {ti["task_id"]: ti["hostname"] for ti in tasks if ti.get("hostname")}

    def follow(self, dag_id: str, run_id: str, timeout: float, report: Report = _quiet) -> str:
        """Wait for a run to end, reporting each task as it starts and ends with the time since the trigger;
        returns the run's final state."""
        run_path = _run_path(dag_id, run_id)
        started, seen = time.monotonic(), {}
        while (state := self.call(run_path)["state"]) not in TERMINAL:
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"run {run_id} still {state} after {timeout:.0f}s")
            self._report_tasks(run_path, seen, started, report)
            time.sleep(3)
        self._report_tasks(run_path, seen, started, report)
        report(f"  [{time.monotonic() - started:4.0f}s] run {state}")
        return state

    def failure_line(self, dag_id: str, run_id: str) -> str:
        """How a run ended, on one line (an outcome line): its state, each failed task with the error its last try
        logged (why, without opening the UI), and its page in the UI."""
        run_path = _run_path(dag_id, run_id)
        state = self.call(run_path)["state"]
        tasks = self.call(f"{run_path}/taskInstances?state=failed&limit=100")["task_instances"]
        errors = "; ".join(f"{ti['task_id']}: {self._logged_error(run_path, ti)}" for ti in tasks)
        why = f" ({errors})" if errors else ""
        return f"run {run_id} {state}{why}; see its task logs at {self.run_url(dag_id, run_id)}"

    def _logged_error(self, run_path: str, ti: dict[str, Any]) -> str:
        task = urllib.parse.quote(ti["task_id"], safe="")
        try:
            log = self.call(f"{run_path}/taskInstances/{task}/logs/{ti['try_number']}?full_content=true")
        except (OSError, ValueError) as err:
            return f"its log could not be read ({err})"
        lines = [line for line in log["content"] if isinstance(line, dict)]
        errors = [_error_text(line) for line in lines if line.get("level") in ("error", "critical")]
        return errors[-1] if errors else "no error in its log"

    def _report_tasks(self, run_path: str, seen: dict[str, str], started: float, report: Report) -> None:
        tasks = self.call(f"{run_path}/taskInstances?limit=100")["task_instances"]
        for ti in sorted(tasks, key=lambda t: t.get("end_date") or t.get("start_date") or ""):
            state = ti["state"]
            if state in ("running", *FINAL_TASK_STATES) and seen.get(ti["task_id"]) != state:
                seen[ti["task_id"]] = state
                ran = state in ("success", "failed") and ti.get("duration") is not None  # skipped ones did not run
                took = f" after {ti['duration']:.0f}s" if ran else ""
                report(f"  [{time.monotonic() - started:4.0f}s] {ti['task_id']}: {state}{took}")


def _error_text(line: dict[str, Any]) -> str:
    """A structured log line's exception (type and message up to its first blank line, on one line), or its event."""
    details = line.get("error_detail") or []
    if not details:
        return str(line.get("event"))
    message = " ".join(str(details[0].get("exc_value", "")).split("\n\n")[0].split())
    return f"{details[0].get('exc_type')}: {message}"[:2000]


def _run_path(dag_id: str, run_id: str) -> str:
    return f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}"


def _open_health(base_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base_url.rstrip('/')}/api/v2/monitor/health", timeout=10) as response:
        return json.loads(response.read())
