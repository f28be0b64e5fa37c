"""Tiny LIBERO-format LeRobot v2.1 datasets for tests, benchmarks and examples.

    from vla.data.synthetic import write_synthetic_libero_dataset
    root = write_synthetic_libero_dataset(tmp_path / "data", num_episodes=3, episode_length=12,
                                          image_size=64)

Same layout as the real LIBERO conversions (two cameras, 8-dim state, 7-dim action with a ±1
gripper, task strings). Images are smooth, so video compression keeps them near-exact, and
differ by episode, frame and camera; `synthetic_episode` returns the exact arrays written.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from vla.data.libero import (ACTION_KEY, IMAGE_KEY, LIBERO_10_TASKS, LIBERO_FPS, STATE_KEY, WRIST_IMAGE_KEY,
                             libero_features)
from vla.data.writer import LeRobotWriter


def _frames(length: int, height: int, width: int, phase: float) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    t = np.arange(length, dtype=np.float32)[:, None, None]
    r = 128 + 100 * np.sin(xx / 40 + t / 5 + phase)
    g = 128 + 100 * np.cos(yy / 35 - t / 7 + 2 * phase)
    b = 128 + 80 * np.sin((xx + yy) / 60 + t / 9 - phase)
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def synthetic_episode(episode_index: int, length: int, image_size: int | tuple[int, int] = 64,
                      state_dim: int = 8, action_dim: int = 7, seed: int = 0) -> dict[str, np.ndarray]:
    """The arrays `write_synthetic_libero_dataset` writes for one episode (deterministic)."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    rng = np.random.default_rng([seed, episode_index])
    steps = rng.normal(0.0, 0.02, size=(length, state_dim)).astype(np.float32)
    state = (rng.normal(0.0, 0.3, size=state_dim).astype(np.float32) + np.cumsum(steps, axis=0))
    actions = np.empty((length, action_dim), dtype=np.float32)
    actions[:, :-1] = np.tanh(rng.normal(0.0, 0.5, size=(length, action_dim - 1)))
    switch = rng.integers(1, max(2, length))
    actions[:, -1] = np.where(np.arange(length) < switch, -1.0, 1.0)  # gripper open, then closed
    phase = 0.7 * episode_index
    return {
        IMAGE_KEY: _frames(length, h, w, phase),
        WRIST_IMAGE_KEY: _frames(length, h, w, phase + 2.0)[:, ::-1].copy(),
        STATE_KEY: state,
        ACTION_KEY: actions,
    }


def write_synthetic_libero_dataset(root: str | os.PathLike, num_episodes: int = 4,
                                   episode_length: int | Sequence[int] = 20,
                                   image_size: int | tuple[int, int] = 64, *, fps: float = LIBERO_FPS,
                                   tasks: Sequence[str] | None = None, state_dim: int = 8,
                                   action_dim: int = 7, chunks_size: int = 1000, vcodec: str = "libx264",
                                   seed: int = 0) -> Path:
    """Write `num_episodes` episodes to `root` (episode e gets task `tasks[e % len(tasks)]`)."""
    tasks = list(tasks) if tasks else LIBERO_10_TASKS
    lengths = [episode_length] * num_episodes if isinstance(episode_length, int) else list(episode_length)
    if len(lengths) != num_episodes:
        raise ValueError(f"episode_length lists {len(lengths)} lengths for {num_episodes} episodes")
    with LeRobotWriter(root, fps=fps, features=libero_features(image_size, state_dim, action_dim),
                       robot_type="panda", chunks_size=chunks_size, vcodec=vcodec) as writer:
        for ep in range(writer.num_episodes, num_episodes):
            data = synthetic_episode(ep, lengths[ep], image_size, state_dim, action_dim, seed)
            writer.add_episode(data, task=tasks[ep % len(tasks)])
    return Path(root)
