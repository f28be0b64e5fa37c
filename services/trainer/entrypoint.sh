#!/usr/bin/env bash
# Trainer container entry point.
#   (no arguments)         train $TRAIN_CONFIG into $TRAIN_WORK_DIR (defaults: the tiny demo config
#                          into work_dirs/demo). Its dataset ($DEMO_DATA_ROOT) and tokenizer
#                          ($DEMO_TOKENIZER_DIR) are made first if absent: a synthetic dataset, and
#                          the tiny tokenizer on the dataset's tasks (a recorded demo dataset is kept).
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
  "${VENV:-/opt/venv}/bin/python" - "$demo_data" "$demo_tokenizer" <<'PY'
import os, sys
from pathlib import Path
data, tokenizer = Path(sys.argv[1]), Path(sys.argv[2])
if not (data / "meta" / "info.json").is_file():
    print(f"trainer: making the synthetic demo dataset in {data}", flush=True)
    from vla.data.synthetic import write_synthetic_libero_dataset
    write_synthetic_libero_dataset(data, num_episodes=int(os.environ.get("DEMO_EPISODES", "8")))
if not tokenizer.is_dir():
    print(f"trainer: making the tiny tokenizer in {tokenizer} from the tasks of {data}", flush=True)
    from vla.data.tiny_tokenizer import build_tiny_tokenizer_for_dataset
    build_tiny_tokenizer_for_dataset(tokenizer, data)
PY
fi
# shellcheck disable=SC2086  # TRAIN_ARGS is a list of extra options, split on purpose
exec bash scripts/train.sh "$config" "$work_dir" ${TRAIN_ARGS:-}
