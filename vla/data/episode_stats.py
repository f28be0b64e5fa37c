"""Per-episode statistics as LeRobot v2.1 stores them in `meta/episodes_stats.jsonl`.

Numeric features: min, max, mean, std (population) over the episode's frames, each of the
feature's shape, plus `count` = [frames]. Camera features: per-channel values in [0, 1]
with shape (3, 1, 1), so a stats entry broadcasts against a C×H×W image.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def numeric_stats(values: np.ndarray) -> dict[str, Any]:
    """Stats over axis 0 of a [T, ...] array (float64 accumulation)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    return {
        "min": x.min(axis=0).tolist(),
        "max": x.max(axis=0).tolist(),
        "mean": x.mean(axis=0).tolist(),
        "std": x.std(axis=0).tolist(),
        "count": [int(x.shape[0])],
    }


def image_stats(frames: np.ndarray) -> dict[str, Any]:
    """Per-channel stats of uint8 [T, H, W, 3] frames scaled to [0, 1], each shaped (3, 1, 1)."""
    frames = np.asarray(frames)
    channels = frames.shape[-1]
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    lo = np.full(channels, 255.0)
    hi = np.zeros(channels)
    for frame in frames:  # one frame at a time: float64 copies of a whole video would be large
        f = frame.reshape(-1, channels).astype(np.float64)
        total += f.sum(axis=0)
        total_sq += (f * f).sum(axis=0)
        lo = np.minimum(lo, f.min(axis=0))
        hi = np.maximum(hi, f.max(axis=0))
    n = frames.shape[0] * frames.shape[1] * frames.shape[2]
    mean = total / n
    var = np.maximum(total_sq / n - mean * mean, 0.0)

    def shaped(v: np.ndarray) -> list:
        return (v / 255.0).reshape(channels, 1, 1).tolist()

    return {"min": shaped(lo), "max": shaped(hi), "mean": shaped(mean),
            "std": (np.sqrt(var) / 255.0).reshape(channels, 1, 1).tolist(), "count": [int(frames.shape[0])]}
