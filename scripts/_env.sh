#!/usr/bin/env bash
# Shared by scripts/demo.sh and scripts/test.sh: create .venv and install DefectLens into it (idempotent).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
EXTRAS="${1:-}"
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "DefectLens needs Python 3.11 or newer (found $("$PYTHON" --version 2>&1))." >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
STAMP=".venv/.defectlens-installed${EXTRAS:+-$EXTRAS}"
WANT="$(cat pyproject.toml constraints-cpu.txt | sha256sum | cut -c1-16)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "Installing DefectLens${EXTRAS:+ with [$EXTRAS]} into .venv (first run takes a few minutes)..."
  .venv/bin/pip install -q --upgrade pip wheel setuptools
  # The constraints pin the CPU torch build; without them pip pulls several GB of CUDA wheels.
  .venv/bin/pip install -q -c constraints-cpu.txt -e ".${EXTRAS:+[$EXTRAS]}"
  echo "$WANT" > "$STAMP"
fi
