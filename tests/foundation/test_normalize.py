import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla.normalize import (DatasetStatistics, FeatureStats, Normalizer, StatisticsError, load_statistics,
                           save_statistics)


def stats_from(data: np.ndarray, mask=None) -> FeatureStats:
    return FeatureStats(mean=data.mean(0), std=data.std(0), min=data.min(0), max=data.max(0),
                        q01=np.quantile(data, 0.01, axis=0), q99=np.quantile(data, 0.99, axis=0), mask=mask)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(500, 7)) * np.arange(1, 8) + np.arange(7)


def test_mean_std_formula_and_exact_inverse(data):
    s = stats_from(data)
    n = Normalizer(s, "mean_std")
    y = n.normalize(data)
    np.testing.assert_allclose(y, (data - s.mean) / (s.std + 1e-8), rtol=1e-12)
    np.testing.assert_allclose(n.denormalize(y), data, rtol=0, atol=1e-12)


def test_quantile_formula_clip_and_inverse_inside_range(data):
    s = stats_from(data)
    n = Normalizer(s, "quantile")
    y = n.normalize(data)
    expected = np.clip(2 * (data - s.q01) / (s.q99 - s.q01 + 1e-8) - 1, -1, 1)
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)
    assert y.min() >= -1 and y.max() <= 1
    inside = np.all((data >= s.q01) & (data <= s.q99), axis=1)
    np.testing.assert_allclose(n.denormalize(y[inside]), data[inside], atol=1e-9)
    # outside the range the map saturates at the quantiles
    np.testing.assert_allclose(n.denormalize(np.full((1, 7), 5.0)), s.q99[None] + 1e-8 * 0, atol=1e-7)


def test_mask_passes_unmasked_dims_through(data):
    mask = [True] * 6 + [False]
    n = Normalizer(stats_from(data, mask), "mean_std")
    y = n.normalize(data)
    np.testing.assert_array_equal(y[:, 6], data[:, 6])
    assert not np.allclose(y[:, 0], data[:, 0])
    np.testing.assert_allclose(n.denormalize(y), data, atol=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 9), st.sampled_from(["mean_std", "quantile"]), st.integers(0, 2**32 - 1))
def test_round_trip_property(dim, mode, seed):
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(64, dim)) * rng.uniform(0.1, 10, size=dim)
    n = Normalizer(stats_from(data), mode)
    x = data if mode == "mean_std" else np.clip(data, n.stats.q01, n.stats.q99)
    np.testing.assert_allclose(n.denormalize(n.normalize(x)), x, atol=1e-8 * (1 + np.abs(x).max()))


def test_float32_in_float32_out(data):
    n = Normalizer(stats_from(data))
    assert n.normalize(data.astype(np.float32)).dtype == np.float32


def test_dimension_mismatch_says_expected_and_got(data):
    n = Normalizer(stats_from(data), name="action")
    with pytest.raises(StatisticsError, match=r"action: expected last dimension 7 \(from the statistics\), got 8"):
        n.normalize(np.zeros((2, 8)))


def test_unknown_mode():
    with pytest.raises(StatisticsError, match="unknown normalisation mode 'minmax'"):
        Normalizer(stats_from(np.ones((3, 2))), "minmax")


def test_file_layout_round_trip_and_missing_name(tmp_path, data):
    stats = DatasetStatistics(action=stats_from(data, [True] * 6 + [False]), proprio=stats_from(data[:, :5] + 1),
                              num_transitions=500, num_trajectories=3)
    path = tmp_path / "dataset_statistics.json"
    save_statistics(path, "libero_10_no_noops", stats)
    raw = json.loads(path.read_text())
    block = raw["libero_10_no_noops"]
    assert set(block) == {"action", "proprio", "num_transitions", "num_trajectories"}
    assert set(block["action"]) == {"mean", "std", "min", "max", "q01", "q99", "mask"}
    assert block["action"]["mask"] == [True] * 6 + [False]
    back = load_statistics(path, "libero_10_no_noops")
    np.testing.assert_allclose(back.action.q99, stats.action.q99)
    assert back.num_transitions == 500
    assert load_statistics(tmp_path, "libero_10_no_noops").proprio.dim == 5
    with pytest.raises(StatisticsError, match=r"no statistics named 'libero_goal'; the file has \['libero_10_no_noops'\]"):
        load_statistics(path, "libero_goal")


def test_malformed_blocks_are_named(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"x": {"action": {"mean": [0, 1]}, "proprio": {}}}))
    with pytest.raises(StatisticsError, match=r"x: action: missing statistics \['std', 'min', 'max', 'q01', 'q99'\]"):
        load_statistics(path, "x")
    path.write_text(json.dumps({"x": {"action": {k: [0, 1] for k in ["mean", "std", "min", "max", "q01"]} | {"q99": [1]},
                                      "proprio": {}}}))
    with pytest.raises(StatisticsError, match="statistics vectors differ in length"):
        load_statistics(path, "x")
    with pytest.raises(StatisticsError, match="statistics file not found"):
        load_statistics(tmp_path / "none.json", "x")
