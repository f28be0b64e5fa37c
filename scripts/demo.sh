#!/usr/bin/env bash
# The end-to-end demo. Grows with the project; see README.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${VENV:-.venv}/bin/python"
exec "$PY" -m demo "$@"
