"""`ParquetDataset`: frames of one or more LeRobot v2.1 datasets with action windows and transforms.

Sample i is one frame. Before the transforms it holds that row's parquet columns and:

    actions        float32 [action_window_size, A]  rows t + window_start_idx, ... of `action_key`
                   (`use_delta=True` is refused: nothing downstream turns deltas back into actions)
    action_masks   float32 [action_window_size]     0 for steps past the episode end, which repeat
                   the last action
    task_description, data_root, frame_source(video_key) -> uint8 H×W×3 at this row's timestamp

The transforms that normalise get the run's statistics once, through `bind_statistics`
(vla/data/binding.py; DistributedRepeatingDataset calls it), so samples carry no statistics.

Rows whose window would start past the episode end (the last `window_start_idx` rows of each
episode) are not samples, so every sample has at least one real action.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Sequence

import numpy as np
from torch.utils.data import Dataset

from vla.config import build, register
from vla.data.binding import bind_statistics
from vla.data.errors import DatasetError
from vla.data.reader import LeRobotReader
from vla.data.video import DEFAULT_DECODER_CACHE
from vla.normalize import DatasetStatistics


@register
class ParquetDataset(Dataset):
    def __init__(self, data_root_path: str | os.PathLike | Sequence[str | os.PathLike], transforms: Sequence[Any] = (),
                 action_window_size: int = 9, action_key: str = "action", use_delta: bool = False,
                 statistic_name: str = "private", window_start_idx: int = 1, episode_cache_mb: float = 64,
                 decoder_cache: int = DEFAULT_DECODER_CACHE):
        super().__init__()
        roots = [data_root_path] if isinstance(data_root_path, (str, os.PathLike)) else list(data_root_path)
        if not roots:
            raise ValueError("data_root_path is empty")
        if action_window_size < 1 or window_start_idx < 0:
            raise ValueError(f"need action_window_size >= 1 and window_start_idx >= 0, got "
                             f"{action_window_size}, {window_start_idx}")
        self.data_root_path = [str(r) for r in roots]
        self.readers = [LeRobotReader(r, episode_cache_mb=episode_cache_mb, decoder_cache=decoder_cache)
                        for r in roots]
        for reader in self.readers:
            if action_key not in reader.column_features:
                raise DatasetError(f"{reader.root}: action_key {action_key!r} is not a numeric feature; "
                                   f"it has {sorted(reader.column_features)}")
        self.chunk_length = int(action_window_size)   # FluxVLA's config name for the chunk length
        self.action_key = action_key
        if use_delta:
            raise ValueError("ParquetDataset.use_delta=True is not supported end to end: the statistics are computed "
                             "on absolute actions and the server does not integrate a chunk of deltas back into "
                             "absolute actions from the observed state; use use_delta=False (the seeds')")
        self.use_delta = False
        self.statistic_name = statistic_name
        self.window_start_idx = int(window_start_idx)
        self.transforms = [build(t) if isinstance(t, dict) else t for t in transforms]
        self.statistics: DatasetStatistics | None = None
        # Sample index -> (reader, position of the episode in that reader, row): a few ints per episode.
        self._reader_of, self._episode_pos, counts = [], [], []
        for r, reader in enumerate(self.readers):
            for pos, length in enumerate(reader.episode_lengths):
                self._reader_of.append(r)
                self._episode_pos.append(pos)
                counts.append(max(0, int(length) - self.window_start_idx))
        self._reader_of = np.asarray(self._reader_of, dtype=np.int32)
        self._episode_pos = np.asarray(self._episode_pos, dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def stats(self) -> list[dict[str, Any]]:
        """Per-episode statistics of every dataset (`episodes_stats.jsonl` rows)."""
        return [{"episode_index": ep, "stats": s} for reader in self.readers
                for ep, s in sorted((reader.meta.episodes_stats or {}).items())]

    def bind_statistics(self, statistics: DatasetStatistics) -> None:
        """Bind the run's statistics into the transforms that normalise (once, before sampling)."""
        bind_statistics(self.transforms, statistics)
        self.statistics = statistics

    def locate(self, index: int) -> tuple[LeRobotReader, int, int]:
        """(reader, episode_index, row) of sample `index`."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"sample index {index} out of range for a dataset of {n} samples")
        index %= n
        k = int(np.searchsorted(self._starts, index, side="right")) - 1
        reader = self.readers[self._reader_of[k]]
        return reader, int(reader.episode_indices[self._episode_pos[k]]), int(index - self._starts[k])

    def action_window(self, actions: np.ndarray, row: int) -> tuple[np.ndarray, np.ndarray]:
        """Actions [window, A] and step masks [window] for `row` of an episode's action array."""
        length = len(actions)
        rows = row + self.window_start_idx + np.arange(self.chunk_length)
        valid = rows < length
        rows = np.minimum(rows, length - 1)  # past the end: repeat the last action
        window = actions[rows].astype(np.float32)
        return window, valid.astype(np.float32)

    def raw_sample(self, index: int) -> dict[str, Any]:
        """Sample `index` before the transforms."""
        reader, ep, row = self.locate(index)
        columns = reader.episode_columns(ep)
        data: dict[str, Any] = {name: values[row] for name, values in columns.items()}
        data["actions"], data["action_masks"] = self.action_window(columns[self.action_key], row)
        data["task_description"] = reader.task(int(data["task_index"])) if "task_index" in data else ""
        data["data_root"] = str(reader.root)
        timestamp = float(data["timestamp"]) if "timestamp" in data else row / reader.fps
        data["frame_source"] = functools.partial(_frame, reader, ep, timestamp)
        return data

    def __getitem__(self, index: int) -> dict[str, Any]:
        data = self.raw_sample(index)
        for transform in self.transforms:
            data = transform(data)
        data.pop("frame_source", None)
        return data


def _frame(reader: LeRobotReader, episode_index: int, timestamp: float, video_key: str) -> np.ndarray:
    return reader.frame(video_key, episode_index, timestamp)
