#!/usr/bin/env bash
# Regenerates vla/wire/_gen/ from proto/. Usage: scripts/gen_proto.sh [OUT_DIR]
# The generated modules import each other relatively so they live inside vla.wire.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${VENV:-.venv}/bin/python"
[ -x "$PY" ] || PY=python3
out="${1:-vla/wire/_gen}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m grpc_tools.protoc -I proto \
  --python_out="$tmp" --pyi_out="$tmp" --grpc_python_out="$tmp" \
  proto/vla/policy/v1/policy.proto
mkdir -p "$out"
src="$tmp/vla/policy/v1"
sed -i 's/^from vla\.policy\.v1 import policy_pb2 as/from . import policy_pb2 as/' "$src/policy_pb2_grpc.py"
for f in policy_pb2.py policy_pb2.pyi policy_pb2_grpc.py; do
  cp "$src/$f" "$out/$f"
done
[ -f "$out/__init__.py" ] || echo '"""Generated from proto/vla/policy/v1/policy.proto by scripts/gen_proto.sh. Do not edit."""' > "$out/__init__.py"
echo "generated $out"
