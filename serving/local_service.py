"""The local model server as a background service for `make up` / `make down`, at settings().serving_url.

    python -m serving.local_service up      # prints the URL; returns once the server answers
    python -m serving.local_service down

It serves settings().serving_dir (where the local deploy step puts blessed versions), runs in the ML environment
(settings().ml_python) in its own session, and keeps its pid file and log beside that folder. Standard library
only, so the Airflow-side `make up` script can call start()/stop().
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from serving.process import server_env
from tfx_modules import private
from tfx_modules.config import MODEL_NAME, PROJECT_ROOT, settings


def _files() -> tuple[Path, Path]:
    base = settings().serving_dir.parent
    return base / "server.pid", base / "server.log"


def running() -> int | None:
    """The pid of the server this module started, if it still runs (and is still that server)."""
    pid_file, _ = _files()
    try:
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError):
        return None
    return pid if b"serving.server" in cmdline else None


def answers(url: str) -> bool:
    """Whether a model server answers at `url` (with or without a model)."""
    try:
        with urllib.request.urlopen(f"{url}/v1/models/{MODEL_NAME}", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # 404 before the first deploy: the server is up, it just has no version yet
    except OSError:
        return False


def start(timeout: float = 120) -> str:
    """Start the server unless it runs; return its URL once it answers."""
    s = settings()
    url = s.serving_url.rstrip("/")
    process = None
    if running() is None:
        parts = urlsplit(url)
        pid_file, log_file = _files()
        s.serving_dir.mkdir(parents=True, exist_ok=True)
        address = ["--host", parts.hostname or "127.0.0.1", "--port", str(parts.port or 80)]
        with log_file.open("ab") as log:
            process = subprocess.Popen(
                [str(s.ml_python), "-m", "serving.server", "--model-dir", str(s.serving_dir), *address],
                env=server_env(),
                cwd=PROJECT_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pid_file.write_text(str(process.pid))
    deadline = time.monotonic() + timeout
    while not answers(url):
        # Our own child: ask it, not /proc (its cmdline reads empty while exec is still setting it up).
        if (process.poll() is not None) if process else running() is None:
            raise RuntimeError(f"the model server exited; see {_files()[1]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the model server did not answer at {url} within {timeout:.0f}s")
        time.sleep(0.5)
    return url


def stop(timeout: float = 30) -> bool:
    """SIGTERM (uvicorn finishes in-flight requests), SIGKILL after `timeout`; False when nothing ran."""
    pid = running()
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running() is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    if running() is not None:
        os.kill(pid, signal.SIGKILL)
    _files()[0].unlink(missing_ok=True)
    return True


def main(argv: list[str] | None = None) -> int:
    command = (argv if argv is not None else sys.argv[1:])[:1]
    private.keep_private(settings().home)
    if command == ["up"]:
        print(f"model server: {start()} (serving {settings().serving_dir})")
    elif command == ["down"]:
        print("model server stopped" if stop() else "model server was not running")
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
