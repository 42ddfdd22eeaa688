#!/usr/bin/env bash
# `make test`: the full suite as two pytest runs side by side. The docker tests (image builds, compose stacks on
# 127.0.0.1's fixed ports) run one after the other and mostly wait on the engine; the rest, which use free ports and
# private homes, are spread over two pytest-xdist workers a file at a time (`--dist loadfile`: a file's module
# fixtures are built once; --no-loadscope-reorder keeps conftest's order, the files with a slow test first, where
# xdist would start the files with the most tests). On 2 cores the three streams take far less wall time than one
# after the other. The docker tests' output comes first, the rest's last (its closing line is the suite's larger
# count). Arguments go to both pytest runs; TEST_WORKERS sets the rest's worker count (default 2).
set -uo pipefail
cd "$(dirname "$0")/.."
py=.venvs/ml/bin/python
rest_log=$(mktemp -t credit-risk-tests.XXXXXX)
trap 'rm -f "$rest_log"' EXIT
"$py" -m pytest -m "not docker" -n "${TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@" > "$rest_log" 2>&1 &
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
