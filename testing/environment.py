"""What a test needs from the machine (a Docker engine, root, a tmpfs mount, the real dataset, a binary): missing,
it skips on a developer's machine with the reason, and fails under CI (any non-empty `CI`, `.ci/run` sets `CI=1`),
where setup provides all of it, so a suite cannot go green by skipping what it claims to test."""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    """True when the `CI` environment variable is set to anything non-empty."""
    return bool(os.environ.get("CI"))


def require(condition: object, reason: str) -> None:
    """Go on when `condition` holds; else skip with `reason`, or fail with it under CI."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """The path of the binary `name` on PATH (scripts/setup_*.sh install them), by `require`'s rule."""
    path = shutil.which(name)
    require(path, f"{name} is not installed (make setup installs it)")
    return str(path)


def require_root(what: str) -> None:
    """Root (mounts, apt-get, a private dockerd, dropping to another user), by `require`'s rule."""
    require(os.geteuid() == 0, f"{what} needs root")
