"""docker/airgap/redis-entrypoint.sh, the air-gapped Redis image's entrypoint, run here on Debian's redis-server as the
image runs it: the official image's contract (options alone start `redis-server`, root drops to the redis user, the
server is the main process) and protected mode off unless a config file says otherwise, so that the Airflow
containers can reach the broker. Bound to 127.0.0.1 on a free port."""

from __future__ import annotations

import os
import pwd
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.config import PROJECT_ROOT
from testing.environment import require_root, require_tool
from testing.harness import free_port

ENTRYPOINT = PROJECT_ROOT / "docker" / "airgap" / "redis-entrypoint.sh"


def redis_cli(port: int, *command: str) -> str:
    result = subprocess.run(["redis-cli", "-p", str(port), *command], capture_output=True, text=True, timeout=10)
    return result.stdout.strip()


@pytest.fixture
def data() -> Iterator[Path]:
    """The image's working folder, /data: where the redis user reaches it (pytest's folders are their owner's only)."""
    with tempfile.TemporaryDirectory(prefix="redis-entrypoint-") as folder:
        Path(folder).chmod(0o711)
        (Path(folder) / "data").mkdir()
        yield Path(folder) / "data"


@pytest.mark.parametrize(("config_file", "protected"), [(False, "no"), (True, "yes")])
def test_redis_entrypoint_keeps_the_official_images_contract(data: Path, config_file: bool, protected: str):
    require_tool("redis-server")
    port = free_port()
    options = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    if config_file:  # a config file of one's own decides on protected mode
        (data / "redis.conf").write_text(f"port {port}\nbind 127.0.0.1\nsave ''\nprotected-mode yes\n")
        options = ["redis.conf"]
    server = subprocess.Popen(["/bin/sh", str(ENTRYPOINT), *options], cwd=data, env={"PATH": os.environ["PATH"]})
    try:
        deadline = time.monotonic() + 20
        while redis_cli(port, "ping") != "PONG":  # the compose healthcheck's command
            assert server.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.2)
        assert redis_cli(port, "config", "get", "protected-mode").splitlines() == ["protected-mode", protected]
        status = dict(line.split(":\t", 1) for line in Path(f"/proc/{server.pid}/status").read_text().splitlines())
        assert status["Name"] == "redis-server"  # exec'd all the way: `docker stop` signals the server itself
        require_root("dropping to the redis user")
        redis = pwd.getpwnam("redis")
        assert int(status["Uid"].split()[0]) == redis.pw_uid
        assert data.stat().st_uid == redis.pw_uid
    finally:
        server.terminate()
        server.wait(timeout=20)
