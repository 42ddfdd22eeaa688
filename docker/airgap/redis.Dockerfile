# Redis from Debian's package behind the official redis image's contract: `redis-server [OPTIONS]` as the command
# (options alone imply it), port 6379, /data as working folder, redis-cli on PATH for the healthcheck.
ARG DEBIAN_IMAGE=credit-risk/debian:bookworm
FROM ${DEBIAN_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data \
 && chown redis:redis /data
COPY redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
EXPOSE 6379
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["redis-server"]
