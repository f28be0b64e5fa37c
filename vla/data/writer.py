"""`LeRobotWriter`: write LeRobot v2.1 datasets, one complete episode at a time.

An episode's parquet and videos are written under temporary names, fsynced and renamed
into place; only then is the episode added to `meta/` (rewritten atomically). An
interrupted conversion therefore leaves whole episodes only, and reopening the same root
appends after the last complete one. One writer at a time: a writer holds an exclusive lock on
`ROOT/.writer.lock` until it is closed (or its process ends), and a second one is refused with
the holder's pid instead of interleaving episodes with it.
"""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vla.data import lerobot_format as fmt
from vla.data.episode_stats import image_stats, numeric_stats
from vla.data.errors import DatasetError
from vla.data.video import VIDEO_CODEC_NAMES, encode_video
from vla.io import fsync_dir, write_json, write_jsonl

_INDEX_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}


def camera_feature(height: int, width: int) -> dict[str, Any]:
    return {"dtype": "video", "shape": [height, width, 3], "names": ["height", "width", "channel"]}


def vector_feature(dim: int, names: list[str] | None = None, dtype: str = "float32") -> dict[str, Any]:
    return {"dtype": dtype, "shape": [dim], "names": names}


def _fsync_rename(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    fsync_dir(final.parent)


def _arrow_column(values: np.ndarray, spec: fmt.FeatureSpec) -> pa.Array:
    """Scalars as plain columns, vectors as fixed_size_list (what LeRobot v2.1 writes)."""
    flat_dtype = spec.numpy_dtype
    if spec.shape in ((), (1,)):
        return pa.array(values.reshape(-1).astype(flat_dtype))
    flat = pa.array(values.reshape(-1).astype(flat_dtype))
    return pa.FixedSizeListArray.from_arrays(flat, spec.width)


LOCK_NAME = ".writer.lock"   # in the dataset root; LeRobot readers read only meta/, data/ and videos/


class LeRobotWriter:
    """Create (or append to) a v2.1 dataset at `root`.

    `features` maps feature names to info.json entries (`camera_feature`, `vector_feature`);
    the index columns (timestamp, frame_index, episode_index, index, task_index) are added.
    Use as a context manager or call `close()`; `add_episode` is complete on return.
    """

    def __init__(self, root: str | os.PathLike, *, fps: float, features: Mapping[str, Mapping[str, Any]],
                 robot_type: str = "unknown", chunks_size: int = fmt.DEFAULT_CHUNKS_SIZE,
                 vcodec: str = "libx264", video_options: dict[str, str] | None = None):
        self.root = Path(root)
        self.vcodec = vcodec
        self.video_options = video_options
        declared = {**{k: dict(v) for k, v in features.items()}, **_INDEX_FEATURES}
        for name, spec in declared.items():
            if spec.get("dtype") == "video":
                h, w = fmt.FeatureSpec(name, "video", tuple(spec["shape"]), spec.get("names")).hwc[:2]
                spec["info"] = {
                    "video.fps": float(fps), "video.height": h, "video.width": w, "video.channels": 3,
                    "video.codec": VIDEO_CODEC_NAMES.get(vcodec, vcodec), "video.pix_fmt": "yuv420p",
                    "video.is_depth_map": False, "has_audio": False}
        self.info: dict[str, Any] = {
            "codebase_version": fmt.CODEBASE_VERSION, "robot_type": robot_type,
            "total_episodes": 0, "total_frames": 0, "total_tasks": 0, "total_videos": 0, "total_chunks": 0,
            "chunks_size": int(chunks_size), "fps": fps, "splits": {},
            "data_path": fmt.DEFAULT_DATA_PATH,
            "video_path": fmt.DEFAULT_VIDEO_PATH if any(s["dtype"] == "video" for s in declared.values()) else None,
            "features": declared,
        }
        self.features = fmt.parse_features(self.info, str(self.root / fmt.INFO_PATH))
        self.episodes: list[dict[str, Any]] = []
        self.episodes_stats: list[dict[str, Any]] = []
        self.tasks: dict[str, int] = {}
        self._lock = self._acquire_lock()
        try:
            if (self.root / fmt.INFO_PATH).is_file():
                self._reopen()
        except BaseException:
            self._release_lock()
            raise

    def _acquire_lock(self):
        """The exclusive writer lock on ROOT/.writer.lock (flock: released when the process ends)."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / LOCK_NAME
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise DatasetError(f"{self.root}: another process (pid {holder}) is writing this dataset "
                               f"({path} is locked); wait for it to finish or write to another directory") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return handle

    def _release_lock(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def _reopen(self) -> None:
        meta = fmt.DatasetMeta.load(self.root)
        if meta.version != fmt.CODEBASE_VERSION:
            raise DatasetError(f"{self.root}: cannot append to a {meta.version} dataset")
        same = json.dumps(meta.info["features"], sort_keys=True) == json.dumps(self.info["features"], sort_keys=True)
        if not same or float(meta.fps) != float(self.info["fps"]):
            raise DatasetError(
                f"{self.root / fmt.INFO_PATH}: the existing dataset's fps/features differ from the writer's; "
                f"write to a new directory")
        self.info["chunks_size"] = meta.chunks_size
        self.episodes = list(meta.episodes)
        self.episodes_stats = [{"episode_index": ep, "stats": s} for ep, s in sorted(meta.episodes_stats.items())]
        self.tasks = {task: idx for idx, task in meta.tasks.items()}

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @property
    def num_frames(self) -> int:
        return sum(int(e["length"]) for e in self.episodes)

    def _task_index(self, task: str) -> int:
        if task not in self.tasks:
            self.tasks[task] = len(self.tasks)
        return self.tasks[task]

    def add_episode(self, data: Mapping[str, Any], task: str) -> int:
        """Write one episode: `data` maps each declared feature to [T, ...] values
        (camera features to uint8 [T, H, W, 3]). Returns the episode index."""
        if not isinstance(task, str) or not task:
            raise ValueError("task must be a non-empty string")
        own = {k: s for k, s in self.features.items() if k not in _INDEX_FEATURES}
        missing = sorted(set(own) - set(data))
        extra = sorted(set(data) - set(own))
        if missing or extra:
            raise ValueError(f"episode data: missing features {missing}, unknown features {extra}")
        lengths = {k: len(v) for k, v in data.items()}
        length = next(iter(lengths.values()))
        if length == 0 or any(n != length for n in lengths.values()):
            raise ValueError(f"episode data: every feature needs the same non-zero number of frames, got {lengths}")

        ep = self.episodes[-1]["episode_index"] + 1 if self.episodes else 0
        start = self.num_frames
        columns: dict[str, np.ndarray] = {
            "timestamp": (np.arange(length) / float(self.info["fps"])).astype(np.float32),
            "frame_index": np.arange(length, dtype=np.int64),
            "episode_index": np.full(length, ep, dtype=np.int64),
            "index": np.arange(start, start + length, dtype=np.int64),
            "task_index": np.full(length, self._task_index(task), dtype=np.int64),
        }
        stats: dict[str, Any] = {}
        videos: dict[str, np.ndarray] = {}
        for name, spec in own.items():
            values = np.asarray(data[name])
            if spec.is_video:
                if values.dtype != np.uint8 or values.shape[1:] != spec.hwc:
                    raise ValueError(f"episode data: {name!r} must be uint8 [T, {', '.join(map(str, spec.hwc))}], "
                                     f"got {values.dtype} {values.shape}")
                videos[name] = values
                stats[name] = image_stats(values)
            else:
                want = (length, *spec.shape) if spec.shape != (1,) else (length,)
                if values.reshape(length, -1).shape[1] != spec.width:
                    raise ValueError(f"episode data: {name!r} must have shape {want}, got {values.shape}")
                columns[name] = values.reshape(want).astype(spec.numpy_dtype)
                stats[name] = numeric_stats(columns[name])
        for name in _INDEX_FEATURES:
            stats[name] = numeric_stats(columns[name])
        self._write_files(ep, columns, videos)
        self.episodes.append({"episode_index": ep, "tasks": [task], "length": length})
        self.episodes_stats.append({"episode_index": ep, "stats": stats})
        self._write_meta()
        return ep

    def _write_files(self, ep: int, columns: dict[str, np.ndarray], videos: dict[str, np.ndarray]) -> None:
        meta = fmt.DatasetMeta(self.root, self.info, fmt.CODEBASE_VERSION, self.features, [], {}, None, None)
        order = [n for n in self.features if n in columns]
        table = pa.table({n: _arrow_column(columns[n], self.features[n]) for n in order})
        staged: list[tuple[Path, Path]] = []
        try:
            data_file = meta.data_file(ep)
            data_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = data_file.with_name(f".{data_file.name}.tmp")
            pq.write_table(table, tmp)
            staged.append((tmp, data_file))
            for key, frames in videos.items():
                video_file = meta.video_file(key, ep)
                video_file.parent.mkdir(parents=True, exist_ok=True)
                tmp = video_file.with_name(f".{video_file.name}.tmp")
                staged.append((tmp, video_file))
                encode_video(tmp, frames, float(self.info["fps"]), codec=self.vcodec, options=self.video_options)
        except BaseException:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
            raise
        for tmp, final in staged:
            _fsync_rename(tmp, final)

    def _write_meta(self) -> None:
        meta_dir = self.root / "meta"
        meta_dir.mkdir(parents=True, exist_ok=True)
        n_eps = len(self.episodes)
        n_videos = sum(1 for f in self.features.values() if f.is_video)
        last = self.episodes[-1]["episode_index"] if self.episodes else -1
        self.info.update(
            total_episodes=n_eps, total_frames=self.num_frames, total_tasks=len(self.tasks),
            total_videos=n_eps * n_videos, total_chunks=fmt.episode_chunk(last, self.info["chunks_size"]) + 1,
            splits={"train": f"0:{n_eps}"})
        write_jsonl(self.root / fmt.TASKS_PATH,
                    [{"task_index": i, "task": t} for t, i in sorted(self.tasks.items(), key=lambda x: x[1])])
        write_jsonl(self.root / fmt.EPISODES_STATS_PATH, self.episodes_stats)
        # episodes.jsonl is what makes an episode part of the dataset: written after its files and stats.
        write_jsonl(self.root / fmt.EPISODES_PATH, self.episodes)
        write_json(self.root / fmt.INFO_PATH, self.info, indent=4)

    def close(self) -> None:
        try:
            if not (self.root / fmt.INFO_PATH).is_file():
                self._write_meta()
        finally:
            self._release_lock()

    def __enter__(self) -> "LeRobotWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
