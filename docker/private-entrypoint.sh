#!/bin/sh
# Entrypoint wrapper of the compose services that keep state: what they write in their volumes is their user's only
# (folders 0700, files 0600), as the local stack's state is (common/permissions.py). POSIX sh, so it also runs in
# the busybox-based Prometheus and Alertmanager images.
#
#   private-entrypoint.sh COMMAND [ARG...]
#
# Sets the umask every process of the container inherits, takes group and other permissions off what is already in
# CREDIT_RISK_PRIVATE_DIRS (space-separated folders: the service's volumes, which an older image may have filled
# world-readable), then runs COMMAND as the container's main process.
set -eu
umask 077
for dir in ${CREDIT_RISK_PRIVATE_DIRS:-}; do
  [ -e "$dir" ] || continue
  chmod -R go-rwx "$dir" || {
    echo "private-entrypoint: cannot make $dir private as user $(id -u): give it to that user" >&2
    exit 1
  }
done
exec "$@"
