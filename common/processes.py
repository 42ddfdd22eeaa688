"""Starting a long-lived helper process (the local model server, a monitoring service, the warm ML worker) apart
from the process that asks for it. Standard library only."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from common.config import PROJECT_ROOT


def start_detached(command: Sequence[str], log: Path, env: Mapping[str, str]) -> subprocess.Popen:
    """`command` from the project root in a session of its own (it outlives its caller, and a terminal's Ctrl-C or a
    task's process-group kill does not reach it), stdin empty, stdout and stderr appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        return subprocess.Popen(
            list(command),
            env=dict(env),
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
