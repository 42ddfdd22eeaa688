# The image of the compose stack's Airflow services (docker-compose.yml: airflow-init, -apiserver, -scheduler,
# -dag-processor, -triggerer). It holds both environments of scripts/setup_env.sh, built by that same script from
# requirements/*.in pinned by requirements/*.lock: Airflow 3 on Python 3.11 and TFX 1.16 on Python 3.10 (they cannot
# share a venv; the DAG runs its TFX tasks with the 3.10 interpreter). The project sits in /opt/credit-risk laid out
# as a checkout (.venvs/, airflow.cfg, var/ = CREDIT_RISK_HOME), so common.config's defaults hold here too.
# Build: `docker compose build` (BuildKit; context: the repository, of which .dockerignore lets in only what is copied).
# linux/amd64 only: tfx-bsl and ml-metadata publish no other Linux wheels. Air-gapped (`make images AIRGAP=1`), the
# image build args below point at local images built from Debian and PyPI only (containers/images.py), and a build
# secret `ca_certs` adds the host's extra CA certificates to pip's for the install steps only (never to the image).

ARG PYTHON_311_IMAGE=python:3.11.7-slim-bookworm
ARG PYTHON_310_IMAGE=python:3.10.13-slim-bookworm
# The deploy step (serving/deploy.py, docker backend) builds the serving image and re-ups the compose service from the
# scheduler: the docker CLI and its compose and buildx plugins, static binaries from Docker's own pinned images.
ARG DOCKER_CLI_IMAGE=docker:27.3.1-cli
ARG DOCKER_COMPOSE_IMAGE=docker/compose-bin:v2.40.3
ARG DOCKER_BUILDX_IMAGE=docker/buildx-bin:0.17.1

FROM ${PYTHON_310_IMAGE} AS python310
FROM ${DOCKER_CLI_IMAGE} AS docker-cli
FROM ${DOCKER_COMPOSE_IMAGE} AS docker-compose
FROM ${DOCKER_BUILDX_IMAGE} AS docker-buildx

# Python 3.11 with the official 3.10 build beside it: the same Debian release, so the same shared libraries.
FROM ${PYTHON_311_IMAGE} AS base
COPY --from=python310 /usr/local/bin/python3.10 /usr/local/bin/python3.10
COPY --from=python310 /usr/local/lib/python3.10 /usr/local/lib/python3.10
COPY --from=python310 /usr/local/lib/libpython3.10.so.1.0 /usr/local/lib/libpython3.10.so.1.0
RUN ldconfig \
 && python3.10 -c "import bz2, ctypes, ensurepip, lzma, sqlite3, ssl, uuid, venv, zlib"

# Both venvs, built where they will live (a venv's scripts hold absolute paths) and copied whole into the runtime.
FROM base AS venvs
ARG DEBIAN_FRONTEND=noninteractive
# TFX brings a few source-only packages (pyfarmhash is C++, crcmod C): a compiler and 3.10's headers build them.
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY --from=python310 /usr/local/include/python3.10 /usr/local/include/python3.10
WORKDIR /opt/credit-risk
COPY scripts/setup_env.sh scripts/
# One layer per environment: a change to the Airflow requirements does not rebuild the TFX venv (~8 min).
COPY requirements/ml.in requirements/ml.lock requirements/
COPY docker/pip-install.sh docker/
RUN --mount=type=cache,target=/var/cache/pip --mount=type=secret,id=ca_certs \
    bash docker/pip-install.sh bash scripts/setup_env.sh ml
COPY requirements/airflow.in requirements/airflow.lock requirements/
RUN --mount=type=cache,target=/var/cache/pip --mount=type=secret,id=ca_certs \
    bash docker/pip-install.sh bash scripts/setup_env.sh airflow

FROM base AS runtime
ARG PYTHON_311_IMAGE
ARG DEBIAN_FRONTEND=noninteractive
LABEL org.opencontainers.image.title="credit-risk-airflow" \
      org.opencontainers.image.description="Airflow 3 (Python 3.11) + TFX 1.16 (Python 3.10) of the credit-risk DAG" \
      org.opencontainers.image.base.name="${PYTHON_311_IMAGE}"

# tini as PID 1 forwards `docker stop` to Airflow and reaps the task processes it leaves behind. The user's ids are
# those of the official Airflow image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends "tini=0.19.0-1*" \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 50000 credit-risk \
 && useradd --system --uid 50000 --gid credit-risk --create-home --home-dir /home/credit-risk credit-risk

COPY --from=docker-cli /usr/local/bin/docker /usr/local/bin/docker
COPY --from=docker-compose /docker-compose /usr/local/lib/docker/cli-plugins/docker-compose
COPY --from=docker-buildx /buildx /usr/local/lib/docker/cli-plugins/docker-buildx

WORKDIR /opt/credit-risk
COPY --from=venvs /opt/credit-risk/.venvs .venvs
COPY airflow.cfg ./
COPY common/ common/
COPY tfx_modules/ tfx_modules/
COPY data/ data/
COPY dags/ dags/
COPY serving/ serving/
COPY monitoring/ monitoring/
COPY live_monitoring/ live_monitoring/
COPY outcomes/ outcomes/
COPY docker/private-entrypoint.sh docker/
# Code and venvs stay root's (read-only to the user). State goes to the compose volumes mounted below var/ and on
# /opt/airflow/auth: an empty named volume takes the owner (and mode: the prediction log is owner-only) of its mount
# point from the image. var/run (the warm ML worker's lock and log) is in the image too: an airflow-worker replica
# mounts a tmpfs there (docker-compose.yml), and a mount point missing from the data volume would be created in it
# as root's, which every other service's private-entrypoint.sh then cannot make private.
RUN mkdir -p var/airflow var/models var/metadata var/predictions var/rollout var/run /opt/airflow/auth \
 && chown -R credit-risk:credit-risk var /opt/airflow \
 && chmod 700 var/predictions var/rollout var/run

# As scripts/airflow_local.py sets them for a local Airflow. The StatsD pair feeds airflow.cfg's ${...} (the
# defaults of common/config.py); docker-compose.yml points both at statsd-exporter.
ENV CREDIT_RISK_PROJECT_ROOT=/opt/credit-risk \
    CREDIT_RISK_HOME=/opt/credit-risk/var \
    CREDIT_RISK_ML_PYTHON=/opt/credit-risk/.venvs/ml/bin/python \
    CREDIT_RISK_STATSD_HOST=127.0.0.1 \
    CREDIT_RISK_STATSD_PORT=8125 \
    AIRFLOW_HOME=/opt/credit-risk/var/airflow \
    AIRFLOW_CONFIG=/opt/credit-risk/airflow.cfg \
    PATH=/opt/credit-risk/.venvs/airflow/bin:${PATH} \
    PYTHONPATH=/opt/credit-risk \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2

USER credit-risk
EXPOSE 8080
# Owner-only state (applicants' data): the umask 077 every process inherits, and the volumes in
# CREDIT_RISK_PRIVATE_DIRS made the service user's only at start (docker/private-entrypoint.sh).
ENV CREDIT_RISK_PRIVATE_DIRS=/opt/credit-risk/var
ENTRYPOINT ["tini", "--", "/opt/credit-risk/docker/private-entrypoint.sh"]
CMD ["airflow", "version"]
