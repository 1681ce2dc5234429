#!/usr/bin/env bash
# One command: set up, load the demo data on the embedded defaults (SQLite, local files, packaged models), serve.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/_env.sh
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"
.venv/bin/defectlens migrate
.venv/bin/defectlens demo
echo
echo "DefectLens is starting at http://$HOST:$PORT/  (log in with the demo logins above; Ctrl+C stops it)"
exec .venv/bin/defectlens serve --host "$HOST" --port "$PORT"
