#!/usr/bin/env bash
# Trainer container entry point.
#   (no arguments)         train $TRAIN_CONFIG into $TRAIN_WORK_DIR (defaults: the tiny demo config
#                          into work_dirs/demo; its synthetic dataset and tokenizer are made first if absent)
#   CONFIG WORK_DIR [...]  passed to scripts/train.sh as is
# scripts/train.sh maps MLP_WORKER_GPU/NUM, MLP_ROLE_INDEX, MLP_WORKER_0_HOST/PORT onto torchrun.
set -euo pipefail
cd "${VLA_APP_DIR:-/app}"   # the image's layout; tests point it at a checkout
if (($#)); then
  exec bash scripts/train.sh "$@"
fi
config=${TRAIN_CONFIG:-configs/pi0/pi0_paligemma_libero_10_full_finetune_tiny.py}
work_dir=${TRAIN_WORK_DIR:-work_dirs/demo}
demo_data=${DEMO_DATA_ROOT:-work_dirs/demo/data}
demo_tokenizer=${DEMO_TOKENIZER_DIR:-work_dirs/demo/tokenizer}
if [[ ${PREPARE_DEMO_DATA:-auto} != never && ( ! -f $demo_data/meta/info.json || ! -d $demo_tokenizer ) ]]; then
  echo "trainer: making the synthetic demo dataset in $demo_data and tokenizer in $demo_tokenizer"
  "${VENV:-/opt/venv}/bin/python" - "$demo_data" "$demo_tokenizer" <<'PY'
import os, sys
from vla.data.synthetic import write_synthetic_libero_dataset
from vla.data.tiny_tokenizer import build_tiny_tokenizer
write_synthetic_libero_dataset(sys.argv[1], num_episodes=int(os.environ.get("DEMO_EPISODES", "8")))
build_tiny_tokenizer(sys.argv[2])
PY
fi
# shellcheck disable=SC2086  # TRAIN_ARGS is a list of extra options, split on purpose
exec bash scripts/train.sh "$config" "$work_dir" ${TRAIN_ARGS:-}
