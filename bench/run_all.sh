#!/usr/bin/env bash
# Run every benchmark with its defaults (bounded; about 7-9 minutes on 2 cores) and keep the
# logs and the machine-readable lines in var/bench/<UTC time>/.
#
#   bash bench/run_all.sh               # everything
#   QUICK=1 bash bench/run_all.sh       # smaller sizes (about 3 minutes), for a smoke run
#   PROFILE=1 bash bench/run_all.sh     # also py-spy the gateway (pip install --target /tmp/pyspy py-spy)
#   EXPERIMENTS=1 bash bench/run_all.sh # also the bench-only fix variants (bench/_variant_server.py)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${BENCH_OUT:-var/bench/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
echo "results in $OUT"

if [ "${QUICK:-0}" = 1 ]; then
  PUB="-n 2000 --reps 2"; FAN="--clients 300 --reps 2 --steady-seconds 4"
  CON="-n 2000 --idle 2"; CMP="--clients 100 --reps 2"
else
  PUB=""; FAN=""; CON=""; CMP=""
fi
PROF=""
if [ "${PROFILE:-0}" = 1 ]; then PROF="--profile $OUT"; fi

run() {  # name, command...: tee the log, bound the time, keep going if one fails
  local name=$1; shift
  echo "== $name: $*"
  if timeout 900 "$@" 2>&1 | tee "$OUT/$name.log"; then :; else echo "!! $name failed (see $OUT/$name.log)"; fi
  grep '^BENCH_JSON ' "$OUT/$name.log" | sed 's/^BENCH_JSON //' >> "$OUT/results.jsonl" || true
}

run publish      "$PY" -u bench/publish.py $PUB
# shellcheck disable=SC2086
run fanout       "$PY" -u bench/fanout.py $FAN $PROF
run connections  "$PY" -u bench/connections.py $CON
run compression  "$PY" -u bench/compression.py $CMP
if [ "${EXPERIMENTS:-0}" = 1 ]; then
  run fanout-fixes "$PY" -u bench/fanout.py $FAN --targets uvicorn,uv-nosess,uv-sansio,uv-gc,uv-set,uv-best,bare
  run connections-fixes "$PY" -u bench/connections.py $CON --targets uvicorn,uv-db,uv-best
fi
echo "done: $OUT/results.jsonl"
"$PY" bench/summarise.py "$OUT" | tee "$OUT/summary.txt"
