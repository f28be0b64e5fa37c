"""dataset_statistics.json: aggregation equals direct numpy computation; quantiles are exact."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla.data import DatasetError, LeRobotReader, compute_dataset_statistics, write_dataset_statistics
from vla.data.quantiles import exact_quantiles
from vla.data.statistics import pool_stats
from vla.data.synthetic import synthetic_episode
from vla.normalize import load_statistics

from .conftest import IMAGE_SIZE, LENGTHS

MAPPINGS = {"observation.state": ["proprio"], "action": ["action"]}
KEYS = ["observation.state", "timestamp", "action"]


def _concatenated(key: str) -> np.ndarray:
    return np.concatenate([synthetic_episode(ep, n, IMAGE_SIZE)[key] for ep, n in enumerate(LENGTHS)])


def _check_block(block, values: np.ndarray) -> None:
    x = values.astype(np.float64)
    np.testing.assert_allclose(block.mean, x.mean(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(block.std, x.std(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(block.min, x.min(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(block.max, x.max(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(block.q01, np.quantile(x, 0.01, axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(block.q99, np.quantile(x, 0.99, axis=0), rtol=1e-5, atol=1e-7)


def test_statistics_equal_numpy_on_the_concatenated_data(synthetic_root):
    stats = compute_dataset_statistics(LeRobotReader(synthetic_root), KEYS, MAPPINGS)
    _check_block(stats.proprio, _concatenated("observation.state"))
    _check_block(stats.action, _concatenated("action"))
    timestamps = np.concatenate([np.arange(n) / 10.0 for n in LENGTHS]).astype(np.float32)[:, None]
    _check_block(stats.extra["timestamp"], timestamps)
    assert stats.num_transitions == sum(LENGTHS) and stats.num_trajectories == len(LENGTHS)
    # the gripper (last action dim) only takes -1/+1: not normalised; the rest are
    assert stats.action.mask.tolist() == [True] * 6 + [False]
    assert stats.proprio.mask is None


def test_pooled_episode_stats_equal_direct_computation():
    rng = np.random.default_rng(1)
    episodes = [rng.normal(loc=i, scale=1 + i, size=(n, 3)) for i, n in enumerate([5, 1, 17, 9])]
    per_episode = [{"mean": e.mean(0), "std": e.std(0), "min": e.min(0), "max": e.max(0), "count": [len(e)]}
                   for e in episodes]
    pooled = pool_stats(per_episode)
    allx = np.concatenate(episodes)
    np.testing.assert_allclose(pooled["mean"], allx.mean(0), rtol=1e-12)
    np.testing.assert_allclose(pooled["std"], allx.std(0), rtol=1e-12)
    np.testing.assert_array_equal(pooled["min"], allx.min(0))
    assert pooled["count"][0] == len(allx)


def test_file_is_written_in_the_shared_format(synthetic_root, tmp_path):
    stats = compute_dataset_statistics(LeRobotReader(synthetic_root), KEYS, MAPPINGS,
                                       action_norm_mask=[True] * 7)
    path = write_dataset_statistics(tmp_path, "libero_10_no_noops", stats)
    assert path.name == "dataset_statistics.json"
    raw = json.loads(path.read_text())["libero_10_no_noops"]
    assert set(raw["action"]) == {"mean", "std", "min", "max", "q01", "q99", "mask"}
    assert raw["action"]["mask"] == [True] * 7
    assert raw["num_transitions"] == sum(LENGTHS) and raw["num_trajectories"] == len(LENGTHS)
    loaded = load_statistics(path, "libero_10_no_noops")
    np.testing.assert_allclose(loaded.proprio.q99, stats.proprio.q99)


def test_v20_dataset_statistics_come_from_the_data(synthetic_root, tmp_path):
    root = tmp_path / "v20"
    shutil.copytree(synthetic_root, root)
    (root / "meta/episodes_stats.jsonl").unlink()
    info = json.loads((root / "meta/info.json").read_text())
    info["codebase_version"] = "v2.0"
    (root / "meta/info.json").write_text(json.dumps(info))
    stats = compute_dataset_statistics(LeRobotReader(root), KEYS, MAPPINGS)
    _check_block(stats.action, _concatenated("action"))


def test_statistics_errors_name_the_problem(synthetic_root):
    reader = LeRobotReader(synthetic_root)
    with pytest.raises(DatasetError, match="observation.eepose"):
        compute_dataset_statistics(reader, ["observation.eepose", "action"], MAPPINGS)
    with pytest.raises(ValueError, match="proprio"):
        compute_dataset_statistics(reader, ["action"], MAPPINGS)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.floats(-1e3, 1e3, allow_nan=False, width=32), min_size=1, max_size=40),
                min_size=1, max_size=6),
       st.sampled_from([2, 3, 64]), st.sampled_from([1, 4, 1000]))
def test_streaming_quantiles_are_exact(chunks, bins, max_collect):
    arrays = [np.asarray(c, dtype=np.float32)[:, None] for c in chunks]
    qs = [0.0, 0.01, 0.5, 0.99, 1.0]
    got = exact_quantiles(lambda: iter(arrays), qs, bins=bins, max_collect=max_collect)
    want = np.quantile(np.concatenate(arrays).astype(np.float64), qs, axis=0)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)
