"""`dataset_statistics.json` from LeRobot datasets (format and writer: `vla.normalize`).

mean / std / min / max aggregate the per-episode stats of `meta/episodes_stats.jsonl`
(pooled: count-weighted mean, std from the within- plus between-episode variance), or of
each episode's data for v2.0 datasets. q01 / q99 are exact quantiles of the data, computed
by streaming the episodes' parquet columns (`vla.data.quantiles`); nothing holds the whole
dataset. `name_mappings` renames (`observation.state` -> `proprio`); the `action` block's
`mask` is False for dimensions that only take two values (a gripper command), which stay
unnormalised, unless `action_norm_mask` says otherwise.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from vla.data.episode_stats import numeric_stats
from vla.data.errors import DatasetError
from vla.data.quantiles import exact_quantiles
from vla.data.reader import LeRobotReader
from vla.normalize import STATISTICS_FILENAME, DatasetStatistics, FeatureStats, save_statistics


def pool_stats(stats: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Combine per-episode {min, max, mean, std, count} into whole-dataset values."""
    if not stats:
        raise ValueError("no per-episode statistics to combine")
    counts = np.array([float(np.ravel(s["count"])[0]) for s in stats])
    means = np.stack([np.ravel(np.asarray(s["mean"], dtype=np.float64)) for s in stats])
    stds = np.stack([np.ravel(np.asarray(s["std"], dtype=np.float64)) for s in stats])
    total = counts.sum()
    mean = (counts[:, None] * means).sum(axis=0) / total
    var = (counts[:, None] * (stds ** 2 + (means - mean) ** 2)).sum(axis=0) / total
    return {
        "mean": mean,
        "std": np.sqrt(np.maximum(var, 0.0)),
        "min": np.min([np.ravel(s["min"]) for s in stats], axis=0).astype(np.float64),
        "max": np.max([np.ravel(s["max"]) for s in stats], axis=0).astype(np.float64),
        "count": np.array([total]),
    }


def _mapped_names(key: str, name_mappings: Mapping[str, Any] | None) -> list[str]:
    if not name_mappings or key not in name_mappings:
        return [key]
    names = name_mappings[key]
    names = [names] if isinstance(names, str) else list(names)
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"name_mappings[{key!r}] must be a name or a list of names, got {name_mappings[key]!r}")
    return names


def _episode_stats(reader: LeRobotReader, ep: int, key: str) -> Mapping[str, Any]:
    per_episode = reader.meta.episodes_stats
    if per_episode is not None:
        stats = per_episode.get(ep, {})
        if key in stats:
            return stats[key]
        raise DatasetError(f"{reader.root / 'meta/episodes_stats.jsonl'}: episode {ep} has no stats for {key!r}")
    return numeric_stats(reader.read_columns(ep, [key])[key])  # v2.0: from the data itself


def compute_dataset_statistics(readers: LeRobotReader | Sequence[LeRobotReader], statistic_keys: Iterable[str],
                               name_mappings: Mapping[str, Any] | None = None, *,
                               action_norm_mask: Sequence[bool] | None = None) -> DatasetStatistics:
    """Statistics of `statistic_keys` over every episode of `readers` (one block per mapped name)."""
    readers = [readers] if isinstance(readers, LeRobotReader) else list(readers)
    keys = list(statistic_keys)
    if not readers or not keys:
        raise ValueError("need at least one dataset and one statistic key")
    for reader in readers:
        missing = [k for k in keys if k not in reader.column_features]
        if missing:
            raise DatasetError(f"{reader.root}: statistic_keys {missing} are not numeric features of this dataset; "
                               f"it has {sorted(reader.column_features)}")
    widths = {k: readers[0].column_features[k].width for k in keys}
    for reader in readers[1:]:
        for k in keys:
            if reader.column_features[k].width != widths[k]:
                raise DatasetError(f"{reader.root}: feature {k!r} has {reader.column_features[k].width} values, "
                                   f"{readers[0].root} has {widths[k]}")

    episodes = [(reader, int(ep)) for reader in readers for ep in reader.episode_indices]
    pooled = {k: pool_stats([_episode_stats(r, ep, k) for r, ep in episodes]) for k in keys}

    def chunks():
        for reader, ep in episodes:
            cols = reader.read_columns(ep, keys)
            yield np.concatenate([cols[k].reshape(len(cols[k]), -1).astype(np.float64) for k in keys], axis=1)

    q01, q99 = exact_quantiles(chunks, [0.01, 0.99])
    two_valued = _two_valued_dims(chunks, np.concatenate([pooled[k]["min"] for k in keys]),
                                  np.concatenate([pooled[k]["max"] for k in keys]))

    blocks: dict[str, FeatureStats] = {}
    offset = 0
    for key in keys:
        width = widths[key]
        part = slice(offset, offset + width)
        offset += width
        for name in _mapped_names(key, name_mappings):
            mask = None
            if name == "action":
                mask = ~two_valued[part] if action_norm_mask is None else np.asarray(action_norm_mask, dtype=bool)
                if len(mask) != width:
                    raise ValueError(f"action_norm_mask has {len(mask)} entries, the action has {width}")
            blocks[name] = FeatureStats(mean=pooled[key]["mean"], std=pooled[key]["std"], min=pooled[key]["min"],
                                        max=pooled[key]["max"], q01=q01[part], q99=q99[part], mask=mask)
    missing = [n for n in ("action", "proprio") if n not in blocks]
    if missing:
        raise ValueError(f"statistics need 'action' and 'proprio' blocks; statistic_keys {keys} with "
                         f"name_mappings {dict(name_mappings or {})} give {sorted(blocks)} (missing {missing})")
    return DatasetStatistics(
        action=blocks.pop("action"), proprio=blocks.pop("proprio"), extra=blocks,
        num_transitions=sum(len(r) for r in readers), num_trajectories=sum(r.num_episodes for r in readers))


def _two_valued_dims(chunks, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """True where every value is the dimension's min or max (and min < max): a binary command."""
    other = np.zeros(len(lo), dtype=bool)
    for chunk in chunks():
        other |= np.any((chunk != lo) & (chunk != hi), axis=0)
    return ~other & (lo < hi)


def write_dataset_statistics(path: str | os.PathLike, statistic_name: str, stats: DatasetStatistics) -> Path:
    """Write (or add) `statistic_name` to a statistics file (a directory gets `dataset_statistics.json`)."""
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / STATISTICS_FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    save_statistics(path, statistic_name, stats)
    return path
