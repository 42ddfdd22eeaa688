#!/usr/bin/env bash
# Create or update one pinned virtualenv under .venvs/: `setup_env.sh ml` (TFX, Python 3.10) or
# `setup_env.sh airflow` (Airflow 3, Python 3.11); `setup_env.sh ml dev` adds requirements/dev.in (tests and
# linters: what `make setup` installs, never the production image). Idempotent: a stamp holds the hash of the requirement files,
# so a second run with nothing to do returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: setup_env.sh ml|airflow [dev]}
extras=()
[[ ${2:-} == dev ]] && extras=(-r requirements/dev.in)
case "$name" in
  ml) version=3.10 ;;
  airflow) version=3.11 ;;
  *) echo "unknown environment '$name' (ml or airflow)" >&2; exit 2 ;;
esac
venv=.venvs/$name
stamp=$venv/.installed
hash=$(cat "requirements/$name.in" "requirements/$name.lock" ${2:+requirements/$2.in} | sha256sum | cut -d' ' -f1)
if [[ -f $stamp && "$(cat "$stamp")" == "$hash" ]]; then
  echo "[setup] $name environment is up to date ($venv)"
  exit 0
fi

find_python() {
  local candidate
  for candidate in "python$version" "$(command -v pyenv >/dev/null && pyenv root)/versions/$version"*/bin/"python$version"; do
    if "$candidate" -c "import sys, venv; assert sys.version_info[:2] == tuple(map(int, '$version'.split('.')))" 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}
python=$(find_python) || {
  echo "[setup] Python $version is required for the $name environment and was not found." >&2
  echo "[setup] Install it (for example 'pyenv install $version' or your distribution's python$version" >&2
  echo "[setup] package with venv support) and run 'make setup' again." >&2
  exit 1
}

echo "[setup] creating the $name environment in $venv with $($python --version)"
[[ -x $venv/bin/python ]] || "$python" -m venv "$venv"
# pip's messages go to a log: some machines' pip configuration makes it print a warning per package ("Location ...
# is ignored"), hundreds of lines. Its errors are shown when it fails, and the resolver's complaints in any case.
log=$venv/setup.log
: > "$log"
noise="^WARNING: Location '.*' is ignored"
quiet_pip() {
  local seen status=0
  seen=$(wc -l < "$log")
  "$venv/bin/python" -m pip "$@" 2>>"$log" || status=$?
  if [[ $status -eq 0 ]]; then
    tail -n "+$((seen + 1))" "$log" | { grep -E "^ERROR" || true; } | sed "s/^/[setup:$name] /" >&2
  else
    echo "[setup] pip $1 failed in the $name environment (all of pip's messages: $log):" >&2
    # In full from pip's first error on; the last 40 lines when it named none.
    tail -n "+$((seen + 1))" "$log" | { grep -v -E "$noise" || true; } \
      | awk '/^ERROR/ { error = 1 } error { print; next } { last[NR % 40] = $0 }
             END { if (!error) for (i = NR - 39; i <= NR; i++) if (i > 0) print last[i % 40] }' >&2
  fi
  return "$status"
}
# One progress line for pip's install: packages collected of those pinned, then installing, and the time taken. On a
# terminal the line is rewritten in place; otherwise it is printed at growing intervals (5 s doubling up to 60 s), so
# a cold install stays a dozen lines in a log. All of pip's output goes to the log.
progress() {
  local total=$1 done=0 phase=collected line tty=0 next=5 interval=5 start=$SECONDS
  [[ -t 1 ]] && tty=1
  show() {
    local text
    text=$(printf "[setup:%s] %d of %d packages %s, %dm%02ds" "$name" "$done" $((done > total ? done : total)) \
      "$phase" $(((SECONDS - start) / 60)) $(((SECONDS - start) % 60)))
    if ((tty)); then printf '\r%s\033[K' "$text"; else echo "$text"; fi
  }
  while true; do
    if IFS= read -r -t 1 line; then
      echo "$line" >> "$log"
      case $line in
        Collecting* | Processing* | "Requirement already satisfied"*) done=$((done + 1)) ;;
        "Installing collected packages"*) phase="collected, installing" ;;
        "Successfully installed"*) phase="collected, installed" ;;
      esac
    elif (($? <= 128)); then
      break  # the end of pip's output (read's timeout has a status above 128)
    fi
    ((tty)) || ((SECONDS - start >= next)) || continue
    show
    interval=$((interval * 2 > 60 ? 60 : interval * 2))
    next=$((SECONDS - start + interval))
  done
  show
  if ((tty)); then printf '\n'; fi
}
quiet_pip install --quiet --upgrade "pip==26.3" "wheel==0.48.0" "setuptools==80.10.2"
pinned=$(grep -c "==" "requirements/$name.lock")
echo "[setup] installing requirements/$name.in pinned by requirements/$name.lock (cold: ml ~8 min, airflow ~2 min)"
quiet_pip install --progress-bar off -r "requirements/$name.in" "${extras[@]}" -c "requirements/$name.lock" \
  | progress "$pinned"
echo "$hash" > "$stamp"
echo "[setup] $name environment ready"
