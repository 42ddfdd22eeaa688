"""docker/private-entrypoint.sh, the compose services' entrypoint wrapper: their volumes get the local stack's rule
(nothing readable by group or others), what they already hold included, and the command runs as the main process.
Run with /bin/sh (dash here; busybox sh in the Prometheus and Alertmanager images)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from common import permissions
from common.config import PROJECT_ROOT

ENTRYPOINT = PROJECT_ROOT / "docker" / "private-entrypoint.sh"


def test_container_entrypoint_makes_volumes_private(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    (volume / "old").mkdir(parents=True)
    (volume / "old" / "batch.csv").write_text("rows")
    for path, mode in ((volume, 0o755), (volume / "old", 0o755), (volume / "old" / "batch.csv", 0o644)):
        path.chmod(mode)
    env = {"PATH": "/usr/bin:/bin", "CREDIT_RISK_PRIVATE_DIRS": f"{volume} {tmp_path / 'absent'}"}
    write = f"mkdir {volume}/new && echo x > {volume}/new/model.pb && exit 7"

    result = subprocess.run(["/bin/sh", str(ENTRYPOINT), "sh", "-c", write], env=env, capture_output=True, text=True)

    assert result.returncode == 7, result.stderr  # the command's own exit status: it ran as the main process
    assert (volume / "new" / "model.pb").read_text() == "x\n"
    assert permissions.exposed(volume) == []
