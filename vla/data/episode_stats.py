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
    """Per-channel stats of uint8 [T, H, W, C] frames scaled to [0, 1], each shaped (C, 1, 1).

    Exact, from per-channel histograms of the 256 byte values (fast, and no float copy of
    the video is ever made).
    """
    frames = np.asarray(frames)
    channels = frames.shape[-1]
    hist = np.zeros((channels, 256), dtype=np.int64)
    for start in range(0, len(frames), 16):
        block = frames[start:start + 16].reshape(-1, channels)
        for c in range(channels):
            hist[c] += np.bincount(block[:, c], minlength=256)
    values = np.arange(256, dtype=np.float64) / 255.0
    n = hist.sum(axis=1)
    mean = (hist * values).sum(axis=1) / n
    var = (hist * (values[None, :] - mean[:, None]) ** 2).sum(axis=1) / n
    present = hist > 0
    lo = values[present.argmax(axis=1)]
    hi = values[255 - present[:, ::-1].argmax(axis=1)]

    def shaped(v: np.ndarray) -> list:
        return v.reshape(channels, 1, 1).tolist()

    return {"min": shaped(lo), "max": shaped(hi), "mean": shaped(mean), "std": shaped(np.sqrt(var)),
            "count": [int(frames.shape[0])]}
