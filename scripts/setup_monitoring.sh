#!/usr/bin/env bash
# Install the local monitoring stack's binaries from Debian's packages: Prometheus (with promtool) and Alertmanager
# (with amtool), and Redis (the local CeleryExecutor's broker). Idempotent: returns at once when all five tools are on
# PATH. The packages' own services are not started; monitoring/local_stack.py and scripts/airflow_local.py run the
# binaries as plain processes on 127.0.0.1.
exec "$(dirname "$0")/apt_tools.sh" "monitoring tools" "prometheus promtool prometheus-alertmanager amtool redis-server" \
  "prometheus --version" prometheus prometheus-alertmanager redis-server
