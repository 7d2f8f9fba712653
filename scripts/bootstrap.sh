#!/usr/bin/env bash
# Create the virtualenv and install the locked dependencies (runtime, or runtime + dev with
# --dev). Re-runnable: it reinstalls only when the lock file changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
lock=requirements.lock
[[ "${1:-}" == "--dev" ]] && lock=requirements-dev.lock

pick_python() {
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      echo "$candidate"; return 0
    fi
  done
  echo "error: Python 3.11 is required (found: $(python3 --version 2>&1))" >&2
  exit 1
}

if [[ ! -x "$VENV/bin/python" ]]; then
  "$(pick_python)" -m venv "$VENV"
fi
stamp="$VENV/.installed-$(basename "$lock")"
if [[ ! -f "$stamp" ]] || ! cmp -s "$lock" "$stamp"; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$lock"
  cp "$lock" "$stamp"
fi
# The Python client library (clients/python), editable, so `python -m researchflow_client` runs
# from this checkout. Re-done when its pyproject or the checkout's location changed.
client_stamp="$VENV/.installed-researchflow-client"
client_want="$(pwd)/clients/python $(cksum < clients/python/pyproject.toml)"
if [[ ! -f "$client_stamp" ]] || [[ "$(cat "$client_stamp")" != "$client_want" ]]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e clients/python
  echo "$client_want" > "$client_stamp"
fi
