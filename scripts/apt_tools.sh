#!/usr/bin/env bash
# `apt_tools.sh WHAT "TOOLS" "VERSION COMMAND" PACKAGE...`: make sure the commands TOOLS are on PATH, installing the
# Debian PACKAGEs (through apt_get.sh: quiet, patient with another apt-get) when one is missing. Idempotent: one line
# saying WHAT is installed, with the VERSION COMMAND's first line. For the set-up scripts of monitoring and browser.
set -euo pipefail
what=$1 version=$3
read -r -a tools <<<"$2"
shift 3
installed() {
  local tool
  for tool in "${tools[@]}"; do command -v "$tool" >/dev/null || { echo "$tool"; return 1; }; done
}
if installed >/dev/null; then
  echo "[setup] $what installed ($(bash -c "$version" 2>&1 | head -1))"
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "[setup] missing ${tools[*]}: install them (Debian packages: $*) or run on a Debian-based machine" >&2
  exit 1
fi
echo "[setup] installing $* from Debian (about 1 min)"
apt_get=$(dirname "$0")/apt_get.sh
"$apt_get" update
"$apt_get" install -y --no-install-recommends "$@"
if missing=$(installed); then
  echo "[setup] $what ready ($(bash -c "$version" 2>&1 | head -1))"
else
  echo "[setup] $missing is still missing after the install" >&2
  exit 1
fi
