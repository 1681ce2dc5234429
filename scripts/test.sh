#!/usr/bin/env bash
# One command: set up everything the tests need, then run ruff, mypy and the whole pytest suite.
# Real services: MariaDB (TEST_MARIADB_URL, default root@127.0.0.1:3306), SeaweedFS (started by the tests),
# Chromium for browser tests. With CI=true a missing service fails the run instead of skipping.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
fc-list 2>/dev/null | grep -qi nanum || need_apt+=(fonts-nanum fontconfig)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing ${need_apt[*]} for the browser tests..."
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "Missing ${need_apt[*]}: browser tests will be skipped (or fail under CI=true)." >&2
  fi
fi

# The machine's MariaDB: start it if it is installed but not running.
if ! (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null && [ -x /usr/sbin/mariadbd ] && [ "$(id -u)" = "0" ]; then
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
  for _ in $(seq 1 30); do (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null && break; sleep 1; done
fi

# RabbitMQ for the job-worker tests: start it if it is installed but not running.
if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && command -v rabbitmq-server >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  rabbitmq-server -detached >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && break; sleep 1; done
fi

bash scripts/_env.sh dev
echo "== ruff"; .venv/bin/ruff check app tests bench scripts
echo "== ruff format"; .venv/bin/ruff format --check app tests bench scripts
echo "== mypy (strict, app/)"; .venv/bin/mypy
echo "== pytest"; exec .venv/bin/pytest "$@"
