#!/usr/bin/env bash
# Lint of src/ and bench/, format check and type check of src/ with the pinned tools of the `test` extra (ruff, mypy).
# Settings live in pyproject.toml ([tool.ruff], [tool.mypy]). Read-only: nothing is rewritten.
# Exit status: non-zero when any of the three checks fails (all three run, so one pass shows everything).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
status=0
echo "== ruff check src bench"
"$BIN/ruff" check src bench || status=1
echo "== ruff format --check src"
"$BIN/ruff" format --check src || status=1
echo "== mypy src"
"$BIN/mypy" src || status=1
exit $status
