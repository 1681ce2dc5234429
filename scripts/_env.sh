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
  if [[ ",$EXTRAS," == *",dev,"* ]]; then
    # llama-cpp-python (dev extra) builds from source; the default native build crashes with a general
    # protection fault on the first completion on these CPUs. ~11 min on 2 cores once, then pip's wheel cache.
    export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DLLAVA_BUILD=OFF}"
  fi
  .venv/bin/pip install -q -c constraints-cpu.txt -e ".${EXTRAS:+[$EXTRAS]}"
  echo "$WANT" > "$STAMP"
fi
