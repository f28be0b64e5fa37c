"""LeRobot dataset layout (v2.1, and v2.0 for reading): meta files, path templates, features.

    root/meta/info.json             codebase_version, fps, chunks_size, data_path, video_path, features
    root/meta/episodes.jsonl        {"episode_index", "tasks", "length"}
    root/meta/tasks.jsonl           {"task_index", "task"}
    root/meta/episodes_stats.jsonl  {"episode_index", "stats": {feature: {min, max, mean, std, count}}}
                                    (v2.0 has one global meta/stats.json instead)
    root/data/chunk-XXX/episode_XXXXXX.parquet
    root/videos/chunk-XXX/<video_key>/episode_XXXXXX.mp4

v3.0 (many episodes per file, `{file_index}` templates) is a different layout and is refused.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vla.data.errors import DatasetError
from vla.io import read_json, read_jsonl

CODEBASE_VERSION = "v2.1"
READABLE_VERSIONS = ("v2.0", "v2.1")
DEFAULT_CHUNKS_SIZE = 1000
DEFAULT_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
DEFAULT_VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
INFO_PATH = "meta/info.json"
EPISODES_PATH = "meta/episodes.jsonl"
TASKS_PATH = "meta/tasks.jsonl"
EPISODES_STATS_PATH = "meta/episodes_stats.jsonl"
STATS_PATH = "meta/stats.json"  # v2.0
# Columns every LeRobot frame carries besides the dataset's own features.
INDEX_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")


def episode_chunk(episode_index: int, chunks_size: int) -> int:
    return episode_index // chunks_size


@dataclass(frozen=True)
class FeatureSpec:
    """One entry of `info.json` `features`."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    names: Any = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def is_video(self) -> bool:
        return self.dtype == "video"

    @property
    def is_image(self) -> bool:
        return self.dtype in ("video", "image")

    @property
    def hwc(self) -> tuple[int, int, int]:
        """(height, width, channels) of a camera feature, whichever order info.json lists."""
        if len(self.shape) != 3:
            raise DatasetError(f"feature {self.name!r}: camera shape {self.shape} is not 3-dimensional")
        names = list(self.names) if isinstance(self.names, (list, tuple)) else None
        if names and set(names) >= {"height", "width"}:
            ch = "channel" if "channel" in names else "channels"
            return (self.shape[names.index("height")], self.shape[names.index("width")],
                    self.shape[names.index(ch)] if ch in names else 3)
        if self.shape[0] in (1, 3) and self.shape[-1] not in (1, 3):
            return (self.shape[1], self.shape[2], self.shape[0])
        return (self.shape[0], self.shape[1], self.shape[2])

    @property
    def numpy_dtype(self) -> np.dtype:
        if self.is_image:
            return np.dtype(np.uint8)
        try:
            return np.dtype("bool" if self.dtype == "bool" else self.dtype)
        except TypeError:
            raise DatasetError(f"feature {self.name!r}: unknown dtype {self.dtype!r}") from None

    @property
    def width(self) -> int:
        """Values per frame of a numeric feature (the product of its shape)."""
        return int(np.prod(self.shape)) if self.shape else 1


def parse_features(info: dict[str, Any], where: str) -> dict[str, FeatureSpec]:
    raw = info.get("features")
    if not isinstance(raw, dict) or not raw:
        raise DatasetError(f"{where}: 'features' is missing or empty")
    specs = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict) or "dtype" not in spec or "shape" not in spec:
            raise DatasetError(f"{where}: feature {name!r} needs 'dtype' and 'shape', got {spec!r}")
        try:
            shape = tuple(int(s) for s in spec["shape"])
        except (TypeError, ValueError):
            raise DatasetError(f"{where}: feature {name!r} has a malformed shape {spec['shape']!r}") from None
        specs[name] = FeatureSpec(name, str(spec["dtype"]), shape, spec.get("names"), dict(spec.get("info") or {}))
    return specs


def check_version(info: dict[str, Any], where: str) -> str:
    """The codebase version, or a DatasetError saying why this layout cannot be read."""
    version = str(info.get("codebase_version", ""))
    data_path = str(info.get("data_path", ""))
    if version.startswith("v3") or "{file_index" in data_path or "{chunk_index" in data_path:
        raise DatasetError(
            f"{where}: this is a LeRobot v3.0 dataset (codebase_version={version or '?'}, "
            f"data_path={data_path!r}), which packs many episodes per file; this project reads the "
            f"v2.1 layout (one parquet and one mp4 per episode). Download the dataset's v2.1 revision "
            f"(a '*_lerobotv2.1' repository, or `--revision v2.1`) or convert it back to v2.1.")
    if version not in READABLE_VERSIONS:
        raise DatasetError(
            f"{where}: unsupported codebase_version {version!r}; readable versions are {READABLE_VERSIONS}")
    return version


def require_keys(row: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise DatasetError(f"{where}: missing {missing}; has {sorted(row)}")


@dataclass
class DatasetMeta:
    """Everything under `meta/`, validated, plus the per-episode file paths."""

    root: Path
    info: dict[str, Any]
    version: str
    features: dict[str, FeatureSpec]
    episodes: list[dict[str, Any]]
    tasks: dict[int, str]
    episodes_stats: dict[int, dict[str, Any]] | None  # v2.1
    global_stats: dict[str, Any] | None  # v2.0

    @classmethod
    def load(cls, root: str | Path) -> "DatasetMeta":
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"{root}: dataset directory not found")
        info_path = root / INFO_PATH
        info = read_json(info_path, error=DatasetError)
        if not isinstance(info, dict):
            raise DatasetError(f"{info_path}: expected a JSON object")
        version = check_version(info, str(info_path))
        require_keys(info, ("fps", "data_path", "features"), str(info_path))
        features = parse_features(info, str(info_path))
        if any(f.is_video for f in features.values()) and not info.get("video_path"):
            raise DatasetError(f"{info_path}: has video features but no 'video_path' template")

        episodes_path = root / EPISODES_PATH
        episodes = read_jsonl(episodes_path, error=DatasetError)
        for i, ep in enumerate(episodes):
            require_keys(ep, ("episode_index", "length"), f"{episodes_path}:{i + 1}")
        episodes.sort(key=lambda e: int(e["episode_index"]))

        tasks_path = root / TASKS_PATH
        tasks = {}
        for i, row in enumerate(read_jsonl(tasks_path, error=DatasetError)):
            require_keys(row, ("task_index", "task"), f"{tasks_path}:{i + 1}")
            tasks[int(row["task_index"])] = str(row["task"])

        episodes_stats = global_stats = None
        stats_path = root / EPISODES_STATS_PATH
        if stats_path.is_file():
            episodes_stats = {}
            for i, row in enumerate(read_jsonl(stats_path, error=DatasetError)):
                require_keys(row, ("episode_index", "stats"), f"{stats_path}:{i + 1}")
                episodes_stats[int(row["episode_index"])] = row["stats"]
        elif version == "v2.1":
            raise DatasetError(f"{stats_path}: file not found (a v2.1 dataset keeps per-episode stats there)")
        elif (root / STATS_PATH).is_file():
            global_stats = read_json(root / STATS_PATH, error=DatasetError)
        return cls(root, info, version, features, episodes, tasks, episodes_stats, global_stats)

    @property
    def fps(self) -> float:
        return float(self.info["fps"])

    @property
    def chunks_size(self) -> int:
        return int(self.info.get("chunks_size", DEFAULT_CHUNKS_SIZE))

    @property
    def video_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f.is_video]

    def data_file(self, episode_index: int) -> Path:
        rel = self.info["data_path"].format(
            episode_chunk=episode_chunk(episode_index, self.chunks_size), episode_index=episode_index)
        return self.root / rel

    def video_file(self, video_key: str, episode_index: int) -> Path:
        rel = self.info["video_path"].format(
            episode_chunk=episode_chunk(episode_index, self.chunks_size), video_key=video_key,
            episode_index=episode_index)
        return self.root / rel
