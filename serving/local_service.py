"""The local serving stack for `make up` / `make down`: the model server behind the gateway.

    python -m serving.local_service up [--grpc]  # prints the URL; returns once the gateway and the server answer
    python -m serving.local_service down

The model server (ML environment) serves settings().serving_dir, where the local deploy step puts blessed versions,
at settings().model_server_url; the gateway (serving/gateway.py, the Airflow environment's Python is enough) is the
one address clients use, settings().serving_url, as in the compose stack. With `--grpc` (`make up`) both serve
gRPC too: the gateway on the serving URL's host at settings().serving_grpc_port (8500, as compose), forwarding to the
server's settings().model_server_grpc_port (the gateway needs grpcio, which both environments have).
Callers that start the service without it (tests, the deploy step's fallback) keep to REST and their free ports.
Each runs in its own session with its pid file and log beside the served folder. Standard library only, so the
Airflow-side `make up` script can call start()/stop().
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from common import permissions
from common.config import MODEL_NAME, Settings, settings
from common.processes import start_detached
from serving.process import server_env


@dataclass(frozen=True)
class Service:
    name: str  # also the module's last part: serving.<name>
    url: str
    grpc: bool = False  # serve gRPC too, on the settings' ports

    def command(self, s: Settings) -> list[str]:
        parts = urlsplit(self.url)
        address = ["--host", parts.hostname or "127.0.0.1", "--port", str(parts.port or 80)]
        if self.name == "server":
            grpc = ["--grpc-port", str(s.model_server_grpc_port)] if self.grpc else []
            return [str(s.ml_python), "-m", "serving.server", "--model-dir", str(s.serving_dir), *address, *grpc]
        grpc = []
        if self.grpc:
            upstream = f"{urlsplit(s.model_server_url).hostname or '127.0.0.1'}:{s.model_server_grpc_port}"
            grpc = ["--grpc-port", str(s.serving_grpc_port), "--grpc-upstream", upstream]
        return [sys.executable, "-m", "serving.gateway", "--upstream", s.model_server_url, *address, *grpc]

    def files(self, s: Settings) -> tuple[Path, Path]:
        base = s.serving_dir.parent
        return base / f"{self.name}.pid", base / f"{self.name}.log"


def services(s: Settings, grpc: bool = False) -> tuple[Service, Service]:
    """In start order: the model server, then the gateway in front of it."""
    return Service("server", s.model_server_url.rstrip("/"), grpc), Service("gateway", s.serving_url.rstrip("/"), grpc)


def running(name: str = "server") -> int | None:
    """The pid of a service this module started, if it still runs (and is still that service)."""
    s = settings()
    (service,) = [svc for svc in services(s) if svc.name == name]
    pid_file, _ = service.files(s)
    try:
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError):
        return None
    return pid if f"serving.{name}".encode() in cmdline else None


def answers(url: str) -> bool:
    """Whether a model server answers at `url` (with or without a model): its model status, or TF Serving's JSON
    NOT_FOUND before the first deploy. Another server that took the port (its own 404), or a gateway whose model
    server is down (503), is no answer."""
    try:
        with urllib.request.urlopen(f"{url}/v1/models/{MODEL_NAME}", timeout=2):
            return True
    except urllib.error.HTTPError as err:
        try:
            return err.code == 404 and "error" in json.loads(err.read())
        except (OSError, ValueError, TypeError):
            return False
    except OSError:
        return False


def _start(s: Settings, service: Service, timeout: float) -> None:
    process = None
    if running(service.name) is None:
        pid_file, log_file = service.files(s)
        s.serving_dir.mkdir(parents=True, exist_ok=True)
        process = start_detached(service.command(s), log_file, server_env())
        pid_file.write_text(str(process.pid))
    deadline = time.monotonic() + timeout
    while not answers(service.url):
        # Our own child: ask it, not /proc (its cmdline reads empty while exec is still setting it up).
        if (process.poll() is not None) if process else running(service.name) is None:
            raise RuntimeError(f"the {service.name} exited; see {service.files(s)[1]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the {service.name} did not answer at {service.url} within {timeout:.0f}s")
        time.sleep(0.5)


def start(timeout: float = 120, grpc: bool = False) -> str:
    """Start the model server and the gateway unless they run (`grpc`: both serving gRPC too); return the gateway's
    URL once both answer."""
    s = settings()
    for service in services(s, grpc):
        _start(s, service, timeout)
    return s.serving_url.rstrip("/")


def grpc_address(s: Settings) -> str:
    """The gateway's gRPC address when started with `grpc` (host:port)."""
    return f"{urlsplit(s.serving_url).hostname or '127.0.0.1'}:{s.serving_grpc_port}"


def _stop(s: Settings, service: Service, timeout: float) -> bool:
    pid = running(service.name)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running(service.name) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    if running(service.name) is not None:
        os.kill(pid, signal.SIGKILL)
    service.files(s)[0].unlink(missing_ok=True)
    return True


def stop(timeout: float = 30) -> bool:
    """SIGTERM (uvicorn finishes in-flight requests), SIGKILL after `timeout`; False when nothing ran."""
    s = settings()
    stopped = [_stop(s, service, timeout) for service in reversed(services(s))]
    return any(stopped)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    command, grpc = args[:1], args[1:] == ["--grpc"]
    s = settings()
    permissions.keep_private(s.home)
    if command == ["up"] and args[1:] in ([], ["--grpc"]):
        also = f", gRPC {grpc_address(s)}" if grpc else ""
        print(f"model server: {start(grpc=grpc)}{also} (gateway to {s.model_server_url}, serving {s.serving_dir})")
    elif args == ["down"]:
        print("model server stopped" if stop() else "model server was not running")
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
