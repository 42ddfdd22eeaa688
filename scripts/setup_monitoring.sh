#!/usr/bin/env bash
# Install the local monitoring stack's binaries from Debian's packages: Prometheus (with promtool) and Alertmanager
# (with amtool), and Redis (the local CeleryExecutor's broker). Idempotent: returns at once when all five tools are on
# PATH. The packages' own services are not started; monitoring/local_stack.py and scripts/airflow_local.py run the
# binaries as plain processes on 127.0.0.1.
set -euo pipefail
tools=(prometheus promtool prometheus-alertmanager amtool redis-server)
missing=()
for tool in "${tools[@]}"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "[setup] monitoring tools are installed ($(prometheus --version 2>&1 | head -1))"
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "[setup] missing ${missing[*]}: install Prometheus, Alertmanager and Redis (Debian: prometheus," >&2
  echo "[setup] prometheus-alertmanager, redis-server) or run on a Debian-based machine." >&2
  exit 1
fi
echo "[setup] installing prometheus, prometheus-alertmanager and redis-server from Debian (about 1 min)"
apt_get=$(dirname "$0")/apt_get.sh
"$apt_get" update
"$apt_get" install -y --no-install-recommends prometheus prometheus-alertmanager redis-server
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || { echo "[setup] $tool is still missing after the install" >&2; exit 1; }
done
echo "[setup] monitoring tools ready ($(prometheus --version 2>&1 | head -1))"
