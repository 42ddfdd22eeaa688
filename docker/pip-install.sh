#!/usr/bin/env bash
# Run an install command with pip's cache in /var/cache/pip and, when the build passes the secret `ca_certs` (a
# host's extra CA certificates, e.g. a proxy's), with those certificates added to the system bundle for this command
# only: the combined bundle is removed before the layer is written.
set -euo pipefail
export PIP_CACHE_DIR=/var/cache/pip
if [[ -s /run/secrets/ca_certs ]]; then
  bundle=$(mktemp)
  trap 'rm -f "$bundle"' EXIT
  cat /etc/ssl/certs/ca-certificates.crt /run/secrets/ca_certs > "$bundle"
  export PIP_CERT=$bundle
fi
"$@"
