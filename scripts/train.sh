#!/usr/bin/env bash
# Train a policy: one process per device through torchrun (FluxVLA's LIBERO guide, "启动训练").
#
#   bash scripts/train.sh CONFIG WORK_DIR [--eval-after-train] [--resume] [--cfg-options k=v ...]
#
# Volcano MLP variables map onto torchrun (unset -> one node, one process, localhost):
#   MLP_WORKER_GPU     -> --nproc_per_node   (processes on this node)
#   MLP_WORKER_NUM     -> --nnodes
#   MLP_ROLE_INDEX     -> --node_rank
#   MLP_WORKER_0_HOST  -> --master_addr      (rendezvous on node 0)
#   MLP_WORKER_0_PORT  -> --master_port
# Backend: NCCL when torch sees CUDA, gloo otherwise (VLA_DIST_BACKEND overrides).
# VLA_TRAIN_DRY_RUN=1 prints the torchrun command instead of running it.
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: bash scripts/train.sh CONFIG WORK_DIR [--eval-after-train] [--resume] [--cfg-options k=v ...]" >&2
  exit 2
fi
CONFIG=$1
WORK_DIR=$2
shift 2
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${VENV:-$REPO/.venv}/bin/python"
[ -x "$PY" ] || PY="$(command -v python3)"

NPROC=${MLP_WORKER_GPU:-1}
NNODES=${MLP_WORKER_NUM:-1}
NODE_RANK=${MLP_ROLE_INDEX:-0}
MASTER_ADDR=${MLP_WORKER_0_HOST:-127.0.0.1}
MASTER_PORT=${MLP_WORKER_0_PORT:-29500}
for pair in "MLP_WORKER_GPU=$NPROC" "MLP_WORKER_NUM=$NNODES" "MLP_ROLE_INDEX=$NODE_RANK" "MLP_WORKER_0_PORT=$MASTER_PORT"; do
  case "${pair#*=}" in
    ''|*[!0-9]*) echo "train.sh: ${pair%%=*} must be a non-negative integer, got '${pair#*=}'" >&2; exit 2 ;;
  esac
done
if [ "$NPROC" -lt 1 ] || [ "$NNODES" -lt 1 ] || [ "$NODE_RANK" -ge "$NNODES" ]; then
  echo "train.sh: need MLP_WORKER_GPU >= 1, MLP_WORKER_NUM >= 1 and MLP_ROLE_INDEX < MLP_WORKER_NUM" \
       "(got $NPROC, $NNODES, $NODE_RANK)" >&2
  exit 2
fi
[ -f "$CONFIG" ] || { echo "train.sh: config file not found: $CONFIG" >&2; exit 2; }

if [ -z "${VLA_DIST_BACKEND:-}" ]; then
  if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    VLA_DIST_BACKEND=nccl
  else
    VLA_DIST_BACKEND=gloo
  fi
fi
export VLA_DIST_BACKEND
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

CMD=("$PY" -m torch.distributed.run
     --nnodes="$NNODES" --nproc_per_node="$NPROC" --node_rank="$NODE_RANK"
     --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT"
     -m trainer.cli "$CONFIG" "$WORK_DIR" "$@")
echo "train.sh: backend=$VLA_DIST_BACKEND ${CMD[*]}" >&2
if [ "${VLA_TRAIN_DRY_RUN:-0}" = "1" ]; then
  printf '%s\n' "${CMD[@]}"
  exit 0
fi
exec "${CMD[@]}"
