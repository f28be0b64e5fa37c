"""`LeRobotReader`: random access to a LeRobot v2.1 (or v2.0) dataset by global frame index.

    reader = LeRobotReader(root)
    len(reader), reader.num_episodes, reader.features       # features as in info.json
    reader[i] -> {feature: np.ndarray | uint8 H×W×3, ..., "episode_index", "frame_index",
                  "timestamp", "task"}

Shapes and dtypes come from `info.json`. Per-episode parquet columns are read once and kept
in an LRU bounded in bytes; videos are decoded at the row's timestamp through a bounded LRU of open
decoders, so memory stays flat however many episodes the index covers.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vla.data import lerobot_format as fmt
from vla.data.errors import DatasetError
from vla.data.video import DEFAULT_DECODER_CACHE, DEFAULT_TOLERANCE_S, DecoderCache

_SCALAR_SHAPES = ((), (1,))


def column_to_numpy(column: pa.ChunkedArray | pa.Array, spec: fmt.FeatureSpec, where: str) -> np.ndarray:
    """A parquet column as [rows, *shape] (scalars as [rows]); fixed_size_list and list both accepted."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    rows = len(arr)
    if arr.null_count:
        raise DatasetError(f"{where}: column {spec.name!r} has {arr.null_count} null values")
    while pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
        if not pa.types.is_fixed_size_list(arr.type):
            lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
            if len(lengths) and (lengths.min() != lengths.max()):
                bad = int(np.argmax(lengths != lengths[0]))
                raise DatasetError(f"{where}: column {spec.name!r} has rows of different lengths "
                                   f"(row 0: {lengths[0]}, row {bad}: {lengths[bad]})")
        arr = arr.flatten()
    values = arr.to_numpy(zero_copy_only=False)
    if spec.shape in _SCALAR_SHAPES:
        if values.size != rows:
            raise DatasetError(f"{where}: column {spec.name!r} holds {values.size // max(rows, 1)} values per "
                               f"row; info.json says shape {list(spec.shape)}")
        return _finite(values.astype(spec.numpy_dtype, copy=False), spec, where)
    if values.size != rows * spec.width:
        raise DatasetError(f"{where}: column {spec.name!r} holds {values.size // max(rows, 1)} values per row; "
                           f"info.json says shape {list(spec.shape)}")
    return _finite(values.reshape(rows, *spec.shape).astype(spec.numpy_dtype, copy=False), spec, where)


def _finite(values: np.ndarray, spec: fmt.FeatureSpec, where: str) -> np.ndarray:
    """`values` if every float in it is finite; else a DatasetError naming the first bad frame and dim."""
    if values.dtype.kind != "f" or np.isfinite(values).all():
        return values
    flat = values.reshape(len(values), -1)
    row = int(np.argmax(~np.isfinite(flat).all(axis=1)))
    dim = int(np.argmax(~np.isfinite(flat[row])))
    count = int((~np.isfinite(flat)).any(axis=1).sum())
    raise DatasetError(f"{where}: column {spec.name!r} holds {flat[row, dim]} at frame {row}"
                       + (f", dim {dim}" if flat.shape[1] > 1 else "")
                       + f" ({count} frame(s) with NaN/inf in this episode); numeric data must be finite: "
                       "fix or drop the episode")


class LeRobotReader:
    """Read a LeRobot v2.1 dataset (v2.0 too); v3.0 is refused with a message saying what to do."""

    def __init__(self, root: str | os.PathLike, *, tolerance_s: float = DEFAULT_TOLERANCE_S,
                 episode_cache_mb: float = 64, decoder_cache: int = DEFAULT_DECODER_CACHE):
        self.meta = fmt.DatasetMeta.load(root)
        self.root = self.meta.root
        self.tolerance_s = tolerance_s
        self.feature_specs = self.meta.features
        self.video_keys = self.meta.video_keys
        self.column_features = {k: f for k, f in self.feature_specs.items() if not f.is_image}
        self.episode_indices = np.array([int(e["episode_index"]) for e in self.meta.episodes], dtype=np.int64)
        self.episode_lengths = np.array([int(e["length"]) for e in self.meta.episodes], dtype=np.int64)
        self.episode_starts = np.concatenate([[0], np.cumsum(self.episode_lengths)]).astype(np.int64)
        self._position = {int(ep): pos for pos, ep in enumerate(self.episode_indices)}
        self._episode_cache_bytes = int(episode_cache_mb * 2**20)
        self._tables: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._cached_bytes = 0
        self._decoders = DecoderCache(decoder_cache, tolerance_s)

    # ---- sizes and metadata -------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.episode_starts[-1])

    @property
    def num_episodes(self) -> int:
        return len(self.episode_indices)

    @property
    def features(self) -> dict[str, Any]:
        return self.meta.info["features"]

    @property
    def fps(self) -> float:
        return self.meta.fps

    @property
    def info(self) -> dict[str, Any]:
        return self.meta.info

    def task(self, task_index: int) -> str:
        try:
            return self.meta.tasks[int(task_index)]
        except KeyError:
            raise DatasetError(f"{self.root / fmt.TASKS_PATH}: no task with task_index {task_index}") from None

    def locate(self, index: int) -> tuple[int, int]:
        """(episode_index, row in that episode) of a global frame index."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"frame index {index} out of range for a dataset of {n} frames")
        index %= n
        pos = int(np.searchsorted(self.episode_starts, index, side="right")) - 1
        return int(self.episode_indices[pos]), int(index - self.episode_starts[pos])

    def episode_range(self, episode_index: int) -> tuple[int, int]:
        """[start, stop) global frame indices of an episode."""
        pos = self._position_of(episode_index)
        return int(self.episode_starts[pos]), int(self.episode_starts[pos + 1])

    def _position_of(self, episode_index: int) -> int:
        try:
            return self._position[int(episode_index)]
        except KeyError:
            raise DatasetError(f"{self.root / fmt.EPISODES_PATH}: no episode {episode_index}") from None

    # ---- parquet ------------------------------------------------------------------------
    def episode_columns(self, episode_index: int) -> dict[str, np.ndarray]:
        """Every non-camera column of one episode, validated (cached in an LRU bounded in bytes)."""
        table = self._tables.get(episode_index)
        if table is not None:
            self._tables.move_to_end(episode_index)
            return table
        table = self._load_episode(episode_index)
        size = sum(a.nbytes for a in table.values())
        while self._tables and self._cached_bytes + size > self._episode_cache_bytes:
            _, old = self._tables.popitem(last=False)
            self._cached_bytes -= sum(a.nbytes for a in old.values())
        self._tables[episode_index] = table
        self._cached_bytes += size
        return table

    def read_columns(self, episode_index: int, names: Iterable[str]) -> dict[str, np.ndarray]:
        """Just `names` of one episode, uncached (streaming passes such as statistics)."""
        return self._load_episode(episode_index, list(names), check_time=False)

    def _load_episode(self, episode_index: int, names: list[str] | None = None,
                      check_time: bool = True) -> dict[str, np.ndarray]:
        path = self.meta.data_file(episode_index)
        where = f"{path} (episode {episode_index})"
        if not path.is_file():
            raise DatasetError(f"{where}: parquet file not found")
        wanted = list(self.column_features) if names is None else list(names)
        unknown = [n for n in wanted if n not in self.column_features]
        if unknown:
            raise DatasetError(f"{self.root / fmt.INFO_PATH}: no numeric features {unknown}; "
                               f"has {sorted(self.column_features)}")
        try:
            parquet = pq.ParquetFile(path)
            schema_names = set(parquet.schema_arrow.names)
            table = parquet.read(columns=[n for n in wanted if n in schema_names])
        except (pa.ArrowException, OSError) as exc:
            raise DatasetError(f"{where}: cannot read parquet: {exc}") from None
        missing = [n for n in wanted if n not in schema_names]
        if missing:
            raise DatasetError(f"{where}: columns {missing} listed in info.json are missing")
        length = int(self.episode_lengths[self._position_of(episode_index)])
        if table.num_rows != length:
            raise DatasetError(f"{where}: {table.num_rows} rows, but meta/episodes.jsonl says length {length}")
        out = {n: column_to_numpy(table.column(n), self.column_features[n], where) for n in wanted}
        if check_time and "timestamp" in out:
            self._check_timestamps(out["timestamp"], where)
        return out

    def _check_timestamps(self, ts: np.ndarray, where: str) -> None:
        if len(ts) < 2:
            return
        step = np.diff(ts.astype(np.float64))
        bad = np.flatnonzero(np.abs(step - 1.0 / self.fps) > max(self.tolerance_s, 1e-3 / self.fps))
        if len(bad):
            k = int(bad[0])
            raise DatasetError(
                f"{where}: timestamp gap between frames {k} and {k + 1} ({ts[k]:.4f}s -> {ts[k + 1]:.4f}s; "
                f"expected steps of 1/fps = {1.0 / self.fps:.4f}s)")

    # ---- frames -------------------------------------------------------------------------
    def frame(self, video_key: str, episode_index: int, timestamp: float) -> np.ndarray:
        """The camera frame of `video_key` at `timestamp` in one episode, uint8 H×W×3."""
        if video_key not in self.video_keys:
            raise DatasetError(f"{self.root / fmt.INFO_PATH}: no video feature {video_key!r}; "
                               f"has {self.video_keys}")
        path = self.meta.video_file(video_key, episode_index)
        decoder = self._decoders.get(path, episode_index)
        image = decoder.frame_at(timestamp)
        want = self.feature_specs[video_key].hwc
        if image.shape != want:
            raise DatasetError(f"{path} (episode {episode_index}): frames are {image.shape}, "
                               f"info.json says {want}")
        return image

    def __getitem__(self, index: int) -> dict[str, Any]:
        episode_index, row = self.locate(int(index))
        columns = self.episode_columns(episode_index)
        item: dict[str, Any] = {name: values[row] for name, values in columns.items()}
        for key in self.video_keys:
            item[key] = self.frame(key, episode_index, float(item["timestamp"]))
        item["task"] = self.task(int(item["task_index"])) if "task_index" in item else ""
        return item

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    def validate(self, *, decode: bool = True) -> None:
        """Check every episode's parquet (and that each video opens and has its first and last frame)."""
        for pos, ep in enumerate(self.episode_indices):
            columns = self._load_episode(int(ep))
            if not decode:
                for key in self.video_keys:
                    if not self.meta.video_file(key, int(ep)).is_file():
                        raise DatasetError(f"{self.meta.video_file(key, int(ep))} (episode {ep}): video file not found")
                continue
            ts = columns.get("timestamp")
            for key in self.video_keys:
                times = (ts[0], ts[-1]) if ts is not None else (0.0,)
                for t in times:
                    self.frame(key, int(ep), float(t))

    def close(self) -> None:
        self._decoders.clear()
        self._tables.clear()
        self._cached_bytes = 0

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_tables"] = OrderedDict()  # workers rebuild their own caches
        state["_cached_bytes"] = 0
        return state
