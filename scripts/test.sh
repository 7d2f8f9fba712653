#!/usr/bin/env bash
# The whole test suite (README's second command; .ci/run calls it). Installs what it needs:
# the locked dev dependencies, redis-server / PostgreSQL / Chromium (Debian) and npm packages.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONDONTWRITEBYTECODE=1

bash scripts/bootstrap.sh --dev
bash scripts/system-deps.sh
PY=.venv/bin

step() { printf '\n=== %s\n' "$*"; }

step "lint: ruff, mypy"
$PY/ruff check .
$PY/ruff format --check .
$PY/mypy .

step "JavaScript: client library and React hook (vitest)"
npm test --silent

# pytest exits 5 when it collects nothing: that is a failure here, never a silent pass.
run_pytest() {
  local status=0
  $PY/pytest "$@" || status=$?
  if ((status == 5)); then
    echo "error: pytest collected no tests for: $*" >&2
  fi
  return "$status"
}

step "Python: unit and integration tests (parallel)"
run_pytest -n 2 -m "not e2e" -p no:cacheprovider

step "Python: end-to-end tests (live servers, Redis, PostgreSQL, Chromium)"
run_pytest -m e2e -p no:cacheprovider
