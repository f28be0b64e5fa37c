#!/usr/bin/env bash
# Runs every benchmark in benchmarks/ and prints their RESULT lines at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${VENV:-.venv}/bin/python"
log=$(mktemp)
status=0
for b in benchmarks/*.py; do
  [ -e "$b" ] || continue
  echo "== $b"
  "$PY" "$b" 2>&1 | tee -a "$log" || status=1
done
echo
echo "== results"
grep '^RESULT ' "$log" || echo "no RESULT lines"
rm -f "$log"
exit $status
