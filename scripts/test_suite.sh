#!/usr/bin/env bash
# `make test`: the full suite as two pytest processes side by side. The docker tests (image builds, compose stacks on
# 127.0.0.1's fixed ports) mostly wait on the engine, the rest mostly on Airflow, TFX and servers on free ports: on
# 2 cores, together they take far less wall time than one after the other. The docker tests' output comes first,
# the rest's last (its closing line is the suite's larger count). Arguments go to both pytest runs.
set -uo pipefail
cd "$(dirname "$0")/.."
py=.venvs/ml/bin/python
rest_log=$(mktemp -t credit-risk-tests.XXXXXX)
trap 'rm -f "$rest_log"' EXIT
"$py" -m pytest -m "not docker" "$@" > "$rest_log" 2>&1 &
rest_pid=$!
"$py" -m pytest -m docker -p no:randomly "$@"
docker=$?
wait "$rest_pid"
rest=$?
echo "---- every test but the docker ones (run beside them) ----"
cat "$rest_log"
# pytest's 5 is "no test collected": an error only when neither part ran a test (a -k may select one part only)
if [[ $docker -eq 5 && $rest -eq 5 ]]; then echo "no tests were collected" >&2; exit 1; fi
[[ $docker -eq 5 ]] && docker=0
[[ $rest -eq 5 ]] && rest=0
if [[ $rest -ne 0 ]]; then exit "$rest"; fi
exit "$docker"
