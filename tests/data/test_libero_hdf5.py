"""LIBERO HDF5 demonstrations (robomimic layout) -> LeRobot v2.1, as LIBERO's conversions do it."""
from __future__ import annotations

import json

import h5py
import numpy as np

from vla.data import LeRobotReader
from vla.data.libero import IMAGE_KEY, WRIST_IMAGE_KEY, convert_libero_hdf5, task_from_filename


def _demo(group, length: int, rng, noop_steps=()):
    obs = group.create_group("obs")
    yy, xx = np.mgrid[0:32, 0:32]
    frames = np.zeros((length, 32, 32, 3), dtype=np.uint8)
    frames[..., 0] = (xx * 6)[None]            # red grows to the right
    frames[..., 1] = (yy * 6)[None]            # green grows downwards
    frames[..., 2] = np.arange(length)[:, None, None] * 10
    obs.create_dataset("agentview_rgb", data=frames)
    obs.create_dataset("eye_in_hand_rgb", data=255 - frames)
    obs.create_dataset("ee_pos", data=rng.normal(size=(length, 3)))
    obs.create_dataset("ee_ori", data=rng.normal(size=(length, 3)))
    obs.create_dataset("gripper_states", data=rng.normal(size=(length, 2)))
    actions = rng.uniform(-1, 1, size=(length, 7))
    actions[:, -1] = -1.0
    for t in noop_steps:
        actions[t, :6] = 0.0
    group.create_dataset("actions", data=actions)
    return frames, actions, obs


def test_convert_rotates_images_and_drops_noops(tmp_path):
    rng = np.random.default_rng(0)
    first = tmp_path / "KITCHEN_SCENE3_turn_on_the_stove_and_put_the_moka_pot_on_it_demo.hdf5"
    with h5py.File(first, "w") as f:
        data = f.create_group("data")
        frames, actions, obs = _demo(data.create_group("demo_0"), 6, rng, noop_steps=(2, 3))
        state = np.concatenate([obs["ee_pos"][:], obs["ee_ori"][:], obs["gripper_states"][:]], axis=1)
        _demo(data.create_group("demo_10"), 4, rng)
        _demo(data.create_group("demo_2"), 5, rng)
    second = tmp_path / "other.hdf5"
    with h5py.File(second, "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = json.dumps({"language_instruction": "put  both moka pots on the stove"})
        _demo(data.create_group("demo_0"), 3, rng)

    convert_libero_hdf5([first, second], tmp_path / "out", image_size=32)
    reader = LeRobotReader(tmp_path / "out")
    assert reader.num_episodes == 4
    # demo_0 loses its 2 no-op steps; demos in numeric order (0, 2, 10); then the second file
    assert reader.episode_lengths.tolist() == [4, 5, 4, 3]
    assert reader[0]["task"] == "turn on the stove and put the moka pot on it"
    assert reader[len(reader) - 1]["task"] == "put both moka pots on the stove"
    kept = [0, 1, 4, 5]
    for row, t in enumerate(kept):
        item = reader[row]
        np.testing.assert_allclose(item["observation.state"], state[t], rtol=1e-6)
        np.testing.assert_allclose(item["action"], actions[t], rtol=1e-6)
        image = item[IMAGE_KEY].astype(float)
        expected = frames[t][::-1, ::-1].astype(float)  # rotated by 180°
        assert np.abs(image - expected).mean() < 3.0
        assert image[0, 0, 0] > image[0, -1, 0] and image[0, 0, 1] > image[-1, 0, 1]
        assert np.abs(item[WRIST_IMAGE_KEY].astype(float) - (255 - expected)).mean() < 3.0
    assert reader.features["observation.state"]["shape"] == [8]


def test_task_from_filename():
    assert task_from_filename("LIVING_ROOM_SCENE2_put_both_the_alphabet_soup_and_the_tomato_sauce_in_the_basket_demo"
                              ".hdf5") == "put both the alphabet soup and the tomato sauce in the basket"
    assert task_from_filename("pick_up_the_book_demo.hdf5") == "pick up the book"
