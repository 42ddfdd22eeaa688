"""The local monitoring stack without Docker: the StatsD bridge, Prometheus and Alertmanager as plain processes.

Everything binds 127.0.0.1; storage, rendered configs, pid files and logs live under
`settings().monitoring_dir` (inside CREDIT_RISK_HOME). Prometheus' config is rendered from monitoring/prometheus.yml
(the compose one) by swapping each compose target for its local address, so there is one source for both.
`make up`/`make down` call `start()`/`stop()`; by hand: `python -m monitoring.local_stack up|down|status`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from common import permissions
from common.config import PROJECT_ROOT, Settings, settings
from common.processes import start_detached
from monitoring import render_alertmanager

MONITORING = Path(__file__).resolve().parent
SERVICES = ("statsd_bridge", "prometheus", "alertmanager")
# Alert routing when no .env says otherwise: the local SMTP sink (`python -m aiosmtpd -n -l 127.0.0.1:1025`).
LOCAL_ALERT_DEFAULTS = {
    "ALERT_SMTP_SMARTHOST": "127.0.0.1:1025",
    "ALERT_SMTP_REQUIRE_TLS": "false",
    "ALERT_EMAIL_FROM": "alertmanager@localhost",
    "ALERT_EMAIL_TO": "credit-risk-team@localhost",
}


@dataclass(frozen=True)
class Service:
    name: str
    command: list[str]
    ready_url: str
    url: str


def _which(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError(f"{' or '.join(names)} not found: run scripts/setup_monitoring.sh (make setup)")


def local_targets(cfg: Settings) -> dict[str, str]:
    """Compose target -> local address, for every target in monitoring/prometheus.yml."""
    serving = urlsplit(cfg.serving_url)
    return {
        "serving:8501": f"{serving.hostname}:{serving.port or 80}",
        "statsd-exporter:9102": f"127.0.0.1:{cfg.statsd_metrics_port}",
        "prometheus:9090": f"127.0.0.1:{cfg.prometheus_port}",
        "alertmanager:9093": f"127.0.0.1:{cfg.alertmanager_port}",
    }


def render_prometheus_config(cfg: Settings, scrape_interval: str | None = None) -> dict:
    """monitoring/prometheus.yml with local targets, absolute rule paths and optionally a shorter interval."""
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    targets = local_targets(cfg)

    def local(group: dict) -> dict:
        unknown = [t for t in group["targets"] if t not in targets]
        if unknown:
            raise ValueError(f"prometheus.yml has targets with no local address: {unknown}")
        return {**group, "targets": [targets[t] for t in group["targets"]]}

    for job in config["scrape_configs"]:
        job["static_configs"] = [local(g) for g in job["static_configs"]]
    for manager in config["alerting"]["alertmanagers"]:
        manager["static_configs"] = [local(g) for g in manager["static_configs"]]
    config["rule_files"] = [str(MONITORING / pattern) for pattern in config["rule_files"]]
    if scrape_interval:
        config["global"].update(scrape_interval=scrape_interval, evaluation_interval=scrape_interval)
    return config


def render_alertmanager_config(cfg: Settings, env: Mapping[str, str]) -> str:
    """The Alertmanager template filled from `env` over local defaults; secrets go to 0600 files beside it."""
    secrets = cfg.monitoring_dir / "secrets"
    secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = {
        "ALERT_SMTP_PASSWORD_FILE": ("smtp_password", env.get("ALERT_SMTP_PASSWORD", "")),
        "ALERT_SLACK_WEBHOOK_URL_FILE": ("slack_webhook_url", env.get("ALERT_SLACK_WEBHOOK_URL", "")),
    }
    for name, value in files.values():
        path = secrets / name
        path.touch(mode=0o600)
        path.write_text(value)
    values = {**LOCAL_ALERT_DEFAULTS, **env, **{var: str(secrets / name) for var, (name, _) in files.items()}}
    return render_alertmanager.render(render_alertmanager.TEMPLATE.read_text(), values)


def services(cfg: Settings) -> list[Service]:
    run = cfg.monitoring_dir
    bridge_url = f"http://127.0.0.1:{cfg.statsd_metrics_port}"
    prometheus_url = f"http://127.0.0.1:{cfg.prometheus_port}"
    alertmanager_url = f"http://127.0.0.1:{cfg.alertmanager_port}"
    bridge = [str(cfg.ml_python), "-m", "monitoring.statsd_bridge", "--mapping", str(MONITORING / "statsd_mapping.yml")]
    bridge += ["--host", "127.0.0.1", "--udp-port", str(cfg.statsd_port), "--http-port", str(cfg.statsd_metrics_port)]
    prometheus = [_which("prometheus"), f"--config.file={run / 'prometheus.yml'}"]
    prometheus += [f"--storage.tsdb.path={run / 'tsdb'}", f"--web.listen-address=127.0.0.1:{cfg.prometheus_port}"]
    prometheus.append("--web.enable-lifecycle")
    alertmanager = [_which("prometheus-alertmanager", "alertmanager"), f"--config.file={run / 'alertmanager.yml'}"]
    alertmanager.append(f"--storage.path={run / 'alertmanager'}")
    alertmanager.append(f"--web.listen-address=127.0.0.1:{cfg.alertmanager_port}")
    alertmanager.append("--cluster.listen-address=")  # no gossip port: a single local instance
    return [
        Service("statsd_bridge", bridge, f"{bridge_url}/-/healthy", f"{bridge_url}/metrics"),
        Service("prometheus", prometheus, f"{prometheus_url}/-/ready", prometheus_url),
        Service("alertmanager", alertmanager, f"{alertmanager_url}/-/ready", alertmanager_url),
    ]


def prometheus_pages(url: str) -> dict[str, str]:
    """The alerts, targets and graph pages of the Prometheus at `url`: `/alerts`... where it serves its React UI,
    `/classic/alerts`... where it serves only the classic one (Debian's package: `/alerts` answers 404 there)."""
    for prefix in ("", "/classic"):
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}{prefix}/alerts", timeout=5):
            return {page: f"{url}{prefix}/{page}" for page in ("alerts", "targets", "graph")}
    raise RuntimeError(f"Prometheus at {url} serves neither /alerts nor /classic/alerts")


def _pid_file(cfg: Settings, name: str) -> Path:
    return cfg.monitoring_dir / "run" / f"{name}.pid"


def _running_pid(cfg: Settings, service: Service) -> int | None:
    """The pid in the service's pid file if that process is still this service (pids get reused)."""
    try:
        pid = int(_pid_file(cfg, service.name).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid if cmdline[: len(service.command)] == [c.encode() for c in service.command] else None


def _wait_ready(service: Service, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{service.name} exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(service.ready_url, timeout=1) as r,
        ):
            if r.status == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{service.name} not ready at {service.ready_url} after {timeout:.0f}s; log: {log}")


def start(
    names: tuple[str, ...] = SERVICES,
    env: Mapping[str, str] | None = None,
    scrape_interval: str | None = None,
    timeout: float = 30.0,
) -> dict[str, str]:
    """Start the named services (idempotent: a running one is kept) and return their URLs once ready."""
    cfg = settings()
    env = dict(os.environ if env is None else env)
    run = cfg.monitoring_dir
    for folder in ("run", "logs", "tsdb", "alertmanager"):
        (run / folder).mkdir(parents=True, exist_ok=True)
    (run / "prometheus.yml").write_text(yaml.safe_dump(render_prometheus_config(cfg, scrape_interval)))
    (run / "alertmanager.yml").write_text(render_alertmanager_config(cfg, env))
    urls = {}
    for service in services(cfg):
        if service.name not in names:
            continue
        urls[service.name] = service.url
        if _running_pid(cfg, service):
            continue
        log = run / "logs" / f"{service.name}.log"
        process = start_detached(service.command, log, {**env, "PYTHONPATH": str(PROJECT_ROOT)})
        _pid_file(cfg, service.name).write_text(str(process.pid))
        _wait_ready(service, process, log, timeout)
    return urls


def stop(names: tuple[str, ...] = SERVICES, timeout: float = 10.0) -> list[str]:
    """Stop the named services that `start` started (by their pid files); return the names stopped."""
    cfg = settings()
    stopped = []
    for service in (s for s in services(cfg) if s.name in names):
        pid = _running_pid(cfg, service)
        _pid_file(cfg, service.name).unlink(missing_ok=True)
        if pid is None:
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
        stopped.append(service.name)
    return stopped


def status() -> dict[str, int | None]:
    cfg = settings()
    return {service.name: _running_pid(cfg, service) for service in services(cfg)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run the local monitoring stack (StatsD bridge, Prometheus, Alertmanager)."
    )
    parser.add_argument("action", choices=("up", "down", "status"))
    args = parser.parse_args(argv)
    permissions.keep_private(settings().home)
    if args.action == "up":
        urls = start()
        for name, url in urls.items():
            print(f"{name:14} {url}")
        for page, url in prometheus_pages(urls["prometheus"]).items():
            print(f"  {page:12} {url}")
    elif args.action == "down":
        print("stopped:", ", ".join(stop()) or "nothing was running")
    else:
        for name, pid in status().items():
            print(f"{name:14} {'running, pid ' + str(pid) if pid else 'stopped'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
