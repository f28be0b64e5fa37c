"""Action windows: window_start_idx, padding past the episode end, use_delta."""
from __future__ import annotations

import numpy as np
import pytest

from vla.data import ParquetDataset
from vla.data.synthetic import synthetic_episode

from .conftest import IMAGE_SIZE, LENGTHS


def _episode_actions(ep: int) -> np.ndarray:
    return synthetic_episode(ep, LENGTHS[ep], IMAGE_SIZE)["action"]


def test_window_from_the_current_row_pads_past_the_end(synthetic_root):
    ds = ParquetDataset(synthetic_root, action_window_size=4, window_start_idx=0)
    assert len(ds) == sum(LENGTHS)
    for ep in range(len(LENGTHS)):
        actions = _episode_actions(ep)
        length = len(actions)
        start = sum(LENGTHS[:ep])
        for row in (0, length - 3, length - 1):
            sample = ds.raw_sample(start + row)
            assert sample["episode_index"] == ep and sample["frame_index"] == row
            real = min(4, length - row)
            np.testing.assert_array_equal(sample["actions"][:real], actions[row:row + real])
            # past the episode end: the last action repeated, masked out
            np.testing.assert_array_equal(sample["actions"][real:], np.repeat(actions[-1:], 4 - real, axis=0))
            np.testing.assert_array_equal(sample["action_masks"], [1.0] * real + [0.0] * (4 - real))


def test_window_start_idx_skips_rows_without_a_next_action(synthetic_root):
    ds = ParquetDataset(synthetic_root, action_window_size=3, window_start_idx=1)
    assert len(ds) == sum(n - 1 for n in LENGTHS)
    # the first sample of episode 1 follows the last usable row (n-2) of episode 0
    last_of_ep0 = ds.raw_sample(LENGTHS[0] - 2)
    assert last_of_ep0["episode_index"] == 0 and last_of_ep0["frame_index"] == LENGTHS[0] - 2
    np.testing.assert_array_equal(last_of_ep0["actions"][0], _episode_actions(0)[-1])
    np.testing.assert_array_equal(last_of_ep0["action_masks"], [1.0, 0.0, 0.0])
    first_of_ep1 = ds.raw_sample(LENGTHS[0] - 1)
    assert first_of_ep1["episode_index"] == 1 and first_of_ep1["frame_index"] == 0
    np.testing.assert_array_equal(first_of_ep1["actions"], _episode_actions(1)[1:4])


def test_use_delta_is_refused_with_the_reason(synthetic_root):
    with pytest.raises(ValueError, match="use_delta=True is not supported end to end.*statistics"):
        ParquetDataset(synthetic_root, action_window_size=3, window_start_idx=0, use_delta=True)


def test_observation_state_as_action_key(synthetic_root):
    ds = ParquetDataset(synthetic_root, action_window_size=2, window_start_idx=1, action_key="observation.state")
    state = synthetic_episode(0, LENGTHS[0], IMAGE_SIZE)["observation.state"]
    np.testing.assert_array_equal(ds.raw_sample(0)["actions"], state[1:3])


def test_bad_window_arguments(synthetic_root):
    with pytest.raises(ValueError, match="action_window_size"):
        ParquetDataset(synthetic_root, action_window_size=0)
    with pytest.raises(ValueError, match="action_key"):
        ParquetDataset(synthetic_root, action_key="actions")
    with pytest.raises(IndexError):
        ParquetDataset(synthetic_root, window_start_idx=0).raw_sample(sum(LENGTHS))
