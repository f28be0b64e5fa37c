# Tiny π0.5 for tests and the demo: the same code as the full config at toy widths (CPU, seconds per step).
# Data from `make demo` (work_dirs/demo/data) and its tiny tokenizer (vocab 512); override with --cfg-options.
_base_ = ['./pi05_paligemma_libero_10_full_finetune_pytorch.py', '../_tiny_/paligemma_libero_tiny.py']

WIDTH = 32  # as in the shared tiny widths
# π0.5 feeds the flow time through adaRMS, so its time MLP maps width -> width (π0's takes action + time, 2x width).
model = dict(action_time_mlp_in=dict(in_dim=WIDTH, out_dim=WIDTH))
