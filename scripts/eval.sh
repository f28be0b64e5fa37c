#!/usr/bin/env bash
# Evaluate a checkpoint on LIBERO (FluxVLA's LIBERO guide, "评测"): serve it, run the sim client, stop the server.
#
#   bash scripts/eval.sh CONFIG CHECKPOINT [sim_client flags, e.g. --tasks 0,3 --trials 5 --workers 2]
#
# CHECKPOINT is a checkpoint_*.pt inside a training work dir (or the work dir itself: its `latest`).
# 1. `policy_server --work-dir DIR --checkpoint FILE` on 127.0.0.1 (free ports unless EVAL_GRPC_PORT /
#    EVAL_HTTP_PORT are set); its log goes to OUT/server.log.
# 2. waits for GET /readyz (EVAL_READY_TIMEOUT_S, default 600 s; the server warms up first).
# 3. `sim_client --server grpc://... --config CONFIG --out OUT` with the config's `eval` section as
#    defaults and the extra flags on top. OUT defaults to DIR/eval_<checkpoint name> (EVAL_OUT
#    overrides): results.jsonl, summary.json, the success table, videos. A rerun resumes there.
#    The server's /metrics is saved to OUT/server_metrics.prom before it is stopped.
# 4. stops the server with SIGTERM (it drains), SIGKILL after EVAL_STOP_TIMEOUT_S (default 30 s).
# EVAL_DEVICE picks the server's device (default: cuda when torch sees a GPU, else cpu).
# EVAL_ARGS adds sim_client flags from the environment (how `vla-train --eval-after-train` gets them).
# Exit status: sim_client's (0 all episodes recorded, 3 infrastructure errors, ...), or 1 if the server
# never became ready.
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: bash scripts/eval.sh CONFIG CHECKPOINT [sim_client flags ...]" >&2
  exit 2
fi
CONFIG=$1
CHECKPOINT=$2
shift 2
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${VENV:-$REPO/.venv}/bin/python"
[ -x "$PY" ] || PY="$(command -v python3)"

[ -f "$CONFIG" ] || { echo "eval.sh: config file not found: $CONFIG" >&2; exit 2; }
if [ -d "$CHECKPOINT" ]; then
  [ -f "$CHECKPOINT/latest" ] || { echo "eval.sh: $CHECKPOINT has no 'latest' file" >&2; exit 2; }
  CHECKPOINT="$CHECKPOINT/$(tr -d '[:space:]' < "$CHECKPOINT/latest")"
fi
[ -f "$CHECKPOINT" ] || { echo "eval.sh: checkpoint not found: $CHECKPOINT" >&2; exit 2; }
WORK_DIR="$(cd "$(dirname "$CHECKPOINT")" && pwd)"
CKPT_NAME="$(basename "$CHECKPOINT")"
for f in config.json dataset_statistics.json; do
  [ -f "$WORK_DIR/$f" ] || { echo "eval.sh: $WORK_DIR/$f missing; is this a training work dir?" >&2; exit 2; }
done
OUT="${EVAL_OUT:-$WORK_DIR/eval_${CKPT_NAME%.*}}"
mkdir -p "$OUT"

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
GRPC_PORT="${EVAL_GRPC_PORT:-$(free_port)}"
HTTP_PORT="${EVAL_HTTP_PORT:-$(free_port)}"
READY_TIMEOUT="${EVAL_READY_TIMEOUT_S:-600}"
STOP_TIMEOUT="${EVAL_STOP_TIMEOUT_S:-30}"
DEVICE="${EVAL_DEVICE:-$("$PY" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')}"

SERVER_PID=""
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 $((STOP_TIMEOUT * 10))); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "eval.sh: server did not stop within ${STOP_TIMEOUT}s; killing it" >&2
      kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
  fi
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
trap stop_server EXIT
trap 'stop_server; exit 130' INT TERM

echo "eval.sh: serving $WORK_DIR/$CKPT_NAME ($DEVICE) on grpc :$GRPC_PORT http :$HTTP_PORT (log $OUT/server.log)" >&2
"$PY" -m policy_server.cli --work-dir "$WORK_DIR" --checkpoint "$CKPT_NAME" --device "$DEVICE" --host 127.0.0.1 \
  --grpc-port "$GRPC_PORT" --http-port "$HTTP_PORT" >"$OUT/server.log" 2>&1 &
SERVER_PID=$!

if ! "$PY" - "$HTTP_PORT" "$READY_TIMEOUT" "$SERVER_PID" <<'PYEOF'
import os, sys, time, urllib.request
port, timeout, pid = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("eval.sh: policy_server exited before it was ready")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit(f"eval.sh: policy_server not ready after {timeout:.0f}s")
PYEOF
then
  echo "eval.sh: last lines of $OUT/server.log:" >&2
  tail -n 20 "$OUT/server.log" >&2 || true
  exit 1
fi

echo "eval.sh: server ready; running sim_client into $OUT" >&2
read -r -a ENV_ARGS <<< "${EVAL_ARGS:-}"
set +e
"$PY" -m sim_client.cli --server "grpc://127.0.0.1:$GRPC_PORT" --config "$CONFIG" --out "$OUT" \
  ${ENV_ARGS[@]+"${ENV_ARGS[@]}"} "$@"
status=$?
set -e
# The server's own /metrics (latency histograms, request counts) kept beside the results: the
# server is stopped next, and `make demo` reports its p50/p99 from this file.
"$PY" - "$HTTP_PORT" "$OUT/server_metrics.prom" <<'PYEOF' || echo "eval.sh: could not save the server's /metrics" >&2
import sys, urllib.request
from vla.io import atomic_write_text
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10) as r:
    atomic_write_text(sys.argv[2], r.read().decode())
PYEOF
stop_server
echo "eval.sh: sim_client exit $status; results in $OUT" >&2
exit $status
