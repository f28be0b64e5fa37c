"""Learning-rate schedules by name (FluxVLA's `lr_scheduler_type`), with linear warm-up.

The multiplier at optimizer step s (0-based) over `total_steps`, warm-up w = ceil(warmup_ratio × total):
  s < w:       (s + 1) / w                       (linear ramp, never exactly 0 on the first step)
  constant:    1
  linear:      (total - s) / (total - w)         (reaches 0 after the last step)
  cosine:      0.5 × (1 + cos(pi × (s - w) / (total - w)))
These match transformers' get_{constant,linear,cosine}_schedule_with_warmup up to the warm-up offset.
"""
from __future__ import annotations

import math

import torch

SCHEDULERS = ("constant", "linear", "cosine")


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
    return math.ceil(warmup_ratio * total_steps)


def lr_multiplier(kind: str, step: int, total_steps: int, warmup: int) -> float:
    if kind not in SCHEDULERS:
        raise ValueError(f"lr_scheduler_type {kind!r} is not one of {', '.join(SCHEDULERS)}")
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    span = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    if kind == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, kind: str, total_steps: int,
                    warmup_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR (its state_dict resumes exactly) for `kind` over `total_steps` optimizer steps."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    lr_multiplier(kind, 0, total_steps, 0)  # validates the name before anything is built
    warmup = warmup_steps(total_steps, warmup_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_multiplier(kind, s, total_steps, warmup))
