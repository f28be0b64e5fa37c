# Tiny π0 for tests and the demo: the same code as the full config at toy widths (CPU, seconds per step).
# Data from `make demo` (work_dirs/demo/data) and its tiny tokenizer (vocab 512); override with --cfg-options.
_base_ = ['./pi0_paligemma_libero_10_full_finetune_pytorch.py', '../_tiny_/paligemma_libero_tiny.py']
