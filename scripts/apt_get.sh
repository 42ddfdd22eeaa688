#!/usr/bin/env bash
# `apt-get ARGS` for the set-up scripts: quiet on success, its errors in full on failure, and patient with another
# apt-get or dpkg: while one holds the package manager's lock this waits (up to CREDIT_RISK_APT_LOCK_WAIT seconds,
# default 600) and says so, instead of failing at once with "Could not get lock". Runs apt-get through sudo unless
# root. needrestart (a dpkg hook on some hosts) is suspended: it restarts services and prints Perl warnings.
set -euo pipefail
wait_seconds=${CREDIT_RISK_APT_LOCK_WAIT:-600}
sudo=()
[[ $(id -u) -eq 0 ]] || sudo=(sudo)
deadline=$((SECONDS + wait_seconds))
waited=""
while true; do
  # Lock::Timeout=0: a held lock fails at once, so this loop (not apt) does the bounded, announced wait.
  if output=$("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 \
      apt-get -q -o DPkg::Lock::Timeout=0 "$@" 2>&1); then
    [[ -z $waited ]] || echo "[setup] the package manager's lock is free: apt-get $1 done"
    exit 0
  fi
  holder=$(grep -m1 -o "Could not get lock .*" <<<"$output" || true)
  if [[ -z $holder ]]; then
    echo "[setup] apt-get $* failed:" >&2
    grep -E "^(E|W|dpkg):|rror" <<<"$output" >&2 || tail -n 30 <<<"$output" >&2
    exit 1
  fi
  if (( SECONDS >= deadline )); then
    echo "[setup] gave up after ${wait_seconds}s: $holder" >&2
    echo "[setup] let that apt-get or dpkg finish (or raise CREDIT_RISK_APT_LOCK_WAIT), then run the set-up again" >&2
    exit 1
  fi
  if [[ -z $waited ]]; then
    echo "[setup] another apt-get or dpkg is running ($holder); waiting up to ${wait_seconds}s for it"
    waited=yes
  fi
  sleep 3
done
