"""scripts/apt_get.sh (what the set-up runs apt-get through) waits, saying so, while another apt-get or dpkg holds
the package manager's lock, gives up after its bound with what holds it, and keeps apt's output to failures.

It runs the real apt-get on this machine: an `install` of the already installed Prometheus package is a no-op that
still takes dpkg's lock, which the test holds for a few seconds as another apt-get would."""

from __future__ import annotations

import fcntl
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from common.config import PROJECT_ROOT
from testing.environment import require, require_root, require_tool

APT_GET = PROJECT_ROOT / "scripts" / "apt_get.sh"
DPKG_LOCK = "/var/lib/dpkg/lock-frontend"
NO_OP = ["install", "-y", "--no-install-recommends", "prometheus"]


@pytest.fixture(autouse=True)
def _apt_get_as_root() -> None:
    """Root, apt-get and the prometheus package (make setup installs it): skipped without, a failure under CI."""
    require_root("running apt-get")
    require_tool("apt-get")
    require_tool("prometheus")


@contextmanager
def dpkg_locked(seconds: float) -> Iterator[None]:
    """Hold dpkg's frontend lock (as apt-get does) for `seconds`, in the background."""
    fd = os.open(DPKG_LOCK, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        require(False, "another apt-get or dpkg holds the lock right now")
    release = threading.Timer(seconds, os.close, [fd])
    release.start()
    try:
        yield
    finally:
        release.join()


def apt_get(*args: str, wait: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "CREDIT_RISK_APT_LOCK_WAIT": str(wait)}
    return subprocess.run([str(APT_GET), *args], env=env, capture_output=True, text=True, timeout=300)


def test_waits_for_a_held_lock_and_says_so() -> None:
    with dpkg_locked(4):
        result = apt_get(*NO_OP)
    assert result.returncode == 0, result.stderr
    assert "another apt-get or dpkg is running (Could not get lock /var/lib/dpkg/lock-frontend" in result.stdout
    assert "waiting up to 600s" in result.stdout and "lock is free" in result.stdout
    assert "Reading package lists" not in result.stdout + result.stderr  # apt's chatter stays out on success


def test_gives_up_after_its_bound_naming_the_lock() -> None:
    with dpkg_locked(8):
        result = apt_get(*NO_OP, wait=1)
    assert result.returncode == 1
    assert "gave up after 1s: Could not get lock /var/lib/dpkg/lock-frontend" in result.stderr


def test_a_real_error_is_shown() -> None:
    result = apt_get("install", "-y", "credit-risk-no-such-package")
    assert result.returncode == 1
    assert "E: Unable to locate package credit-risk-no-such-package" in result.stderr
