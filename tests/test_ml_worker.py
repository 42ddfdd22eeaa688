"""The warm ML worker and its client, real processes end to end: calls run in forks of one worker per home, output
reaches the caller's log, failures carry their exception text, and every way a worker or a call can die or hang
ends in a result or a clear error, never a hang. One module-wide home; each test starts from the worker state it
needs (`worker`: one running, warm; or none), in any order, and a test that kills or stops the worker leaves the next
one to start a new one (each pays its imports, ~15 s)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from testing.harness import wait_for
from tests.conftest import ml_env
from tfx_modules.ml_worker import client as ml_client
from tfx_modules.ml_worker.protocol import address, lock_path, log_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A CREDIT_RISK_HOME and a private TMPDIR for this module's calls; its worker is stopped at the end."""
    home = tmp_path_factory.mktemp("ml_worker")
    tmp = home / "tmp"
    tmp.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CREDIT_RISK_HOME", str(home))
        patch.setenv("CREDIT_RISK_ML_WORKER_ANSWER_SECONDS", "5")
        patch.setenv("TMPDIR", str(tmp))
        patch.setattr(tempfile, "tempdir", str(tmp))
        yield home
        ml_client.stop(home)


@pytest.fixture
def worker(home: Path) -> int:
    """The pid of the home's worker, running and warm: the one a call finds, or a new one it starts."""
    pid = ml_client.call("os:getppid")
    assert pid == worker_pid(home)
    return pid


@pytest.fixture
def no_worker(home: Path) -> None:
    """The home's worker stopped, if one ran."""
    ml_client.stop(home)
    assert not ml_client.running(home)


def worker_pid(home: Path) -> int:
    return int(lock_path(home).read_text())


def worker_log(home: Path) -> str:
    return log_path(home).read_text() if log_path(home).exists() else ""


CALL_STARTED = "time:sleep -> pid "  # the worker's log line for a forked `time:sleep` call


def started_call(home: Path, calls_before: int) -> int:
    """The pid of the next `time:sleep` call the worker forks after `calls_before` of them, once it runs."""
    wait_for(lambda: worker_log(home).count(CALL_STARTED) > calls_before, 30, "the call to start", interval=0.05)
    return int(worker_log(home).split(CALL_STARTED)[calls_before + 1].split()[0])


def test_calls_run_in_forks_of_one_warm_worker_and_their_output_reaches_the_log(
    home: Path, worker: int, caplog
) -> None:
    caplog.set_level(logging.INFO, logger=ml_client.__name__)

    run_id = ml_client.call("tfx_modules.node_runner:pipeline_run_id", "manual__2026-01-01T00:00:00+00:00")
    printed = ml_client.call("builtins:print", "hello from the ML environment")

    assert run_id == "manual__2026-01-01T00_00_00_00_00" and printed is None
    assert "hello from the ML environment" in caplog.messages
    assert ml_client.call("os:getppid") == worker == worker_pid(home)


def test_a_call_that_raises_fails_with_its_exception_text_and_traceback(home: Path) -> None:
    with pytest.raises(ml_client.MLCallError) as failure:
        ml_client.call("tfx_modules.node_runner:run_node", "NoSuchComponent", "run", str(home))

    message = str(failure.value)
    assert message.startswith("KeyError: \"unknown component 'NoSuchComponent'; the pipeline has CsvExampleGen")
    assert "Traceback (most recent call last)" in message and "node_runner.py" in message


def test_a_call_whose_process_dies_fails_saying_how_and_the_worker_serves_on(worker: int) -> None:
    with pytest.raises(ml_client.MLCallError, match="os:kill: its process was killed by SIGKILL"):
        ml_client.call("os:kill", 0, signal.SIGKILL)  # its own process group: the call's process
    with pytest.raises(ml_client.MLCallError, match="os:_exit: its process exited with code 3"):
        ml_client.call("os:_exit", 3)

    assert ml_client.call("os:getppid") == worker


def test_calls_run_side_by_side_each_with_a_private_tmpdir_removed_afterwards(worker: int) -> None:
    with ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        assert list(pool.map(lambda seconds: ml_client.call("time:sleep", seconds), [3, 3])) == [None, None]
        elapsed = time.monotonic() - started
        tmpdirs = list(pool.map(lambda _: ml_client.call("tempfile:gettempdir"), range(2)))

    assert elapsed < 5.5, f"two 3 s calls took {elapsed:.1f} s: not side by side"
    assert len(set(tmpdirs)) == 2 and all(Path(d).parent == Path(tempfile.gettempdir()) for d in tmpdirs)
    assert list(Path(tempfile.gettempdir()).iterdir()) == []


def test_a_malformed_request_is_refused_and_the_worker_serves_on(home: Path, worker: int) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(address(home))
        conn.sendall(b'{"call": "os:getpid"}\n')  # no arguments, environment or output pipe
        assert conn.recv(100) == b""  # closed, nothing run

    assert ml_client.call("os:getppid") == worker


def test_a_client_that_goes_away_has_its_call_stopped(home: Path, worker: int) -> None:
    code = "from tfx_modules.ml_worker import client; client.call('time:sleep', 300)"
    calls = worker_log(home).count(CALL_STARTED)
    client = subprocess.Popen([sys.executable, "-c", code], env=ml_env(home, TMPDIR=os.environ["TMPDIR"]))
    call_pid = started_call(home, calls)

    client.kill()
    client.wait()

    wait_for(lambda: not Path(f"/proc/{call_pid}").exists(), 10, "the abandoned call to stop", interval=0.1)


def test_a_killed_worker_leaves_its_running_call_to_finish_and_is_replaced(home: Path, worker: int) -> None:
    calls = worker_log(home).count(CALL_STARTED)
    with ThreadPoolExecutor(1) as pool:
        running_call = pool.submit(ml_client.call, "time:sleep", 4)
        call_pid = started_call(home, calls)
        os.kill(worker, signal.SIGKILL)
        assert Path(f"/proc/{call_pid}").exists()  # the call outlives its worker ...
        assert running_call.result(timeout=60) is None  # ... and answers

    wait_for(lambda: not ml_client.running(home), 30, "the killed worker's lock to go", interval=0.1)
    new_worker = ml_client.call("os:getppid")
    assert new_worker != worker and new_worker == worker_pid(home)


def test_a_hung_worker_is_replaced(home: Path, worker: int) -> None:
    hung = worker
    os.kill(hung, signal.SIGSTOP)
    try:
        new_worker = ml_client.call("os:getppid")
    finally:
        with contextlib.suppress(ProcessLookupError):  # the client killed it already
            os.kill(hung, signal.SIGKILL)

    assert new_worker != hung and new_worker == worker_pid(home)


def test_concurrent_first_calls_start_one_worker_which_exits_when_idle(
    home: Path, no_worker: None, monkeypatch
) -> None:
    monkeypatch.setenv("CREDIT_RISK_ML_WORKER_IDLE_SECONDS", "3")
    starts = worker_log(home).count(" ready for ")

    with ThreadPoolExecutor(3) as pool:
        parents = set(pool.map(lambda _: ml_client.call("os:getppid"), range(3)))

    assert len(parents) == 1 and worker_log(home).count(" ready for ") == starts + 1
    wait_for(lambda: not ml_client.running(home), 30, "the idle worker to exit", interval=0.1)


def test_light_calls_and_a_switched_off_worker_use_a_fresh_process(home: Path, no_worker: None, monkeypatch) -> None:
    assert ml_client.call("os:getppid", light=True) == os.getpid()  # no worker ready: a child of this process
    assert not ml_client.running(home)  # ... and it started none
    ml_client.start()
    assert ml_client.running(home)
    wait_for(
        lambda: ml_client.call("os:getppid", light=True) == worker_pid(home), 120, "light calls to reach the worker"
    )

    ml_client.stop(home)
    monkeypatch.setenv("CREDIT_RISK_ML_WORKER", "off")
    assert ml_client.call("os:getppid") == os.getpid() and not ml_client.running(home)
    with pytest.raises(ml_client.MLCallError, match="its process was killed by SIGKILL"):
        ml_client.call("os:kill", 0, signal.SIGKILL)
