"""`Normalizer` and the `dataset_statistics.json` format (numpy only).

The file is keyed by `statistic_name` (OpenVLA / FluxVLA layout):

    {"libero_10_no_noops": {
        "action":  {"mean", "std", "min", "max", "q01", "q99", "mask"},
        "proprio": {"mean", "std", "min", "max", "q01", "q99"},
        "num_transitions": int, "num_trajectories": int}}

One `Normalizer` serves the trainer (normalise states and actions) and the policy
server (normalise proprio, denormalise actions), so the two can never disagree.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from vla.errors import VLAError
from vla.io import read_json, write_json

EPS = 1e-8
STAT_KEYS = ("mean", "std", "min", "max", "q01", "q99")
MODES = ("mean_std", "quantile")
STATISTICS_FILENAME = "dataset_statistics.json"


class StatisticsError(VLAError, ValueError):
    """A statistics file or block that is missing, malformed or does not fit the data."""


@dataclass
class FeatureStats:
    """Statistics of one feature (`action` or `proprio`), each a float vector of length `dim`."""

    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    q01: np.ndarray
    q99: np.ndarray
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        dims = {k: np.asarray(getattr(self, k)).shape for k in STAT_KEYS}
        for key in STAT_KEYS:
            setattr(self, key, np.asarray(getattr(self, key), dtype=np.float64).reshape(-1))
        lengths = {k: len(getattr(self, k)) for k in STAT_KEYS}
        if len(set(lengths.values())) != 1:
            raise StatisticsError(f"statistics vectors differ in length: {lengths} (shapes {dims})")
        if self.mask is not None:
            self.mask = np.asarray(self.mask, dtype=bool).reshape(-1)
            if len(self.mask) != self.dim:
                raise StatisticsError(f"mask has {len(self.mask)} entries, expected {self.dim}")

    @property
    def dim(self) -> int:
        return len(self.mean)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "") -> "FeatureStats":
        missing = [k for k in STAT_KEYS if k not in data]
        if missing:
            raise StatisticsError(f"{where}missing statistics {missing}; has {sorted(data)}")
        try:
            return cls(**{k: data[k] for k in STAT_KEYS}, mask=data.get("mask"))
        except StatisticsError as exc:
            raise StatisticsError(f"{where}{exc}") from None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: [float(x) for x in getattr(self, k)] for k in STAT_KEYS}
        if self.mask is not None:
            out["mask"] = [bool(x) for x in self.mask]
        return out


@dataclass
class DatasetStatistics:
    """One `statistic_name` entry of `dataset_statistics.json`."""

    action: FeatureStats
    proprio: FeatureStats
    num_transitions: int = 0
    num_trajectories: int = 0
    extra: dict[str, FeatureStats] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action.to_dict(), "proprio": self.proprio.to_dict()}
        for key, stats in self.extra.items():
            out[key] = stats.to_dict()
        out["num_transitions"] = int(self.num_transitions)
        out["num_trajectories"] = int(self.num_trajectories)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "") -> "DatasetStatistics":
        for key in ("action", "proprio"):
            if key not in data:
                raise StatisticsError(f"{where}no {key!r} block; has {sorted(data)}")
        extra = {k: FeatureStats.from_dict(v, where=f"{where}{k}: ") for k, v in data.items()
                 if isinstance(v, Mapping) and k not in ("action", "proprio")}
        return cls(
            action=FeatureStats.from_dict(data["action"], where=f"{where}action: "),
            proprio=FeatureStats.from_dict(data["proprio"], where=f"{where}proprio: "),
            num_transitions=int(data.get("num_transitions", 0)),
            num_trajectories=int(data.get("num_trajectories", 0)),
            extra=extra,
        )


def load_statistics(path: str | os.PathLike, statistic_name: str) -> DatasetStatistics:
    """Read one `statistic_name` from a statistics file; a wrong name lists the ones present."""
    path = Path(path)
    if path.is_dir():
        path = path / STATISTICS_FILENAME
    if not path.is_file():
        raise StatisticsError(f"{path}: statistics file not found")
    data = read_json(path, error=StatisticsError)
    if not isinstance(data, dict):
        raise StatisticsError(f"{path}: expected an object keyed by statistic_name")
    if statistic_name not in data:
        raise StatisticsError(
            f"{path}: no statistics named {statistic_name!r}; the file has {sorted(data)}")
    return DatasetStatistics.from_dict(data[statistic_name], where=f"{path}: {statistic_name}: ")


def save_statistics(path: str | os.PathLike, statistic_name: str, stats: DatasetStatistics) -> None:
    """Write (or add to) a statistics file atomically."""
    path = Path(path)
    existing: dict[str, Any] = read_json(path, error=StatisticsError) if path.is_file() else {}
    existing[statistic_name] = stats.to_dict()
    write_json(path, existing)


class Normalizer:
    """Normalise and denormalise one feature with mean/std or q01/q99 statistics.

    mean_std:  y = (x - mean) / (std + 1e-8)
    quantile:  y = clip(2 * (x - q01) / (q99 - q01 + 1e-8) - 1, -1, 1)
    Dimensions whose `mask` is False pass through unchanged (the gripper, usually).
    `denormalize(normalize(x)) == x` wherever the map is invertible (inside [q01, q99]
    for quantiles).
    """

    def __init__(self, stats: FeatureStats, mode: str = "mean_std", name: str = "feature"):
        if mode not in MODES:
            raise StatisticsError(f"unknown normalisation mode {mode!r}; use one of {MODES}")
        self.stats = stats
        self.mode = mode
        self.name = name
        if mode == "mean_std":
            self._offset, self._scale = stats.mean, stats.std + EPS
        else:
            self._offset, self._scale = stats.q01, (stats.q99 - stats.q01 + EPS) / 2.0
        self._mask = stats.mask if stats.mask is not None else np.ones(stats.dim, dtype=bool)

    @classmethod
    def from_quantiles_flag(cls, stats: FeatureStats, use_quantiles: bool, name: str = "feature") -> "Normalizer":
        return cls(stats, "quantile" if use_quantiles else "mean_std", name=name)

    @property
    def dim(self) -> int:
        return self.stats.dim

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            got = x.shape[-1] if x.ndim else "a scalar"
            raise StatisticsError(
                f"{self.name}: expected last dimension {self.dim} (from the statistics), got {got} "
                f"(array shape {x.shape})")
        return x

    def normalize(self, x: np.ndarray) -> np.ndarray:
        x = self._check(x)
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
        x64 = x.astype(np.float64)
        if self.mode == "mean_std":
            y = (x64 - self._offset) / self._scale
        else:
            y = np.clip((x64 - self._offset) / self._scale - 1.0, -1.0, 1.0)
        return np.where(self._mask, y, x64).astype(dtype)

    def denormalize(self, y: np.ndarray) -> np.ndarray:
        y = self._check(y)
        dtype = y.dtype if np.issubdtype(y.dtype, np.floating) else np.float32
        y64 = y.astype(np.float64)
        if self.mode == "mean_std":
            x = y64 * self._scale + self._offset
        else:
            x = (np.clip(y64, -1.0, 1.0) + 1.0) * self._scale + self._offset
        return np.where(self._mask, x, y64).astype(dtype)
