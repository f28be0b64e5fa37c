"""LIBERO in LeRobot v2.1: feature layout, task strings, and the HDF5 demonstration converter.

The layout matches the public LIBERO LeRobot conversions (`*_no_noops_lerobotv2.1`):
two 256×256 cameras (`observation.images.image` = agentview, `observation.images.wrist_image`
= eye-in-hand), an 8-dim `observation.state` (eef position 3 + axis-angle 3 + gripper qpos 2)
and a 7-dim `action` (6 end-effector deltas + gripper). Raw LIBERO renders are upside down;
the conversions rotate them by 180°, and so does `convert_libero_hdf5`.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from vla.data.writer import LeRobotWriter, camera_feature, vector_feature
from vla.libero import rotate_180

IMAGE_KEY = "observation.images.image"
WRIST_IMAGE_KEY = "observation.images.wrist_image"
STATE_KEY = "observation.state"
ACTION_KEY = "action"
LIBERO_FPS = 10
STATE_NAMES = ["eef_pos_x", "eef_pos_y", "eef_pos_z", "eef_axis_angle_x", "eef_axis_angle_y",
               "eef_axis_angle_z", "gripper_qpos_left", "gripper_qpos_right"]
ACTION_NAMES = ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]

# The ten libero_10 (LIBERO-Long) task instructions.
LIBERO_10_TASKS = [
    "put both the alphabet soup and the tomato sauce in the basket",
    "put both the cream cheese box and the butter in the basket",
    "turn on the stove and put the moka pot on it",
    "put the black bowl in the bottom drawer of the cabinet and close it",
    "put the white mug on the left plate and put the yellow and white mug on the right plate",
    "pick up the book and place it in the back compartment of the caddy",
    "put the white mug on the plate and put the chocolate pudding to the right of the plate",
    "put both the alphabet soup and the cream cheese box in the basket",
    "put both moka pots on the stove",
    "put the yellow and white mug in the microwave and close it",
]


def libero_features(image_size: int | tuple[int, int] = 256, state_dim: int = 8,
                    action_dim: int = 7) -> dict[str, dict[str, Any]]:
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    return {
        IMAGE_KEY: camera_feature(h, w),
        WRIST_IMAGE_KEY: camera_feature(h, w),
        STATE_KEY: vector_feature(state_dim, STATE_NAMES if state_dim == 8 else None),
        ACTION_KEY: vector_feature(action_dim, ACTION_NAMES if action_dim == 7 else None),
    }


def task_from_filename(path: str | os.PathLike) -> str:
    """`KITCHEN_SCENE3_turn_on_the_stove_and_put_the_moka_pot_on_it_demo.hdf5` -> the instruction."""
    stem = Path(path).stem
    stem = re.sub(r"_demo$", "", stem)
    words = stem.split("_")
    while words and (words[0].isupper() or words[0].isdigit() or re.fullmatch(r"[A-Z]+\d+", words[0])):
        words.pop(0)  # scene prefix such as LIVING_ROOM_SCENE2
    return " ".join(words)


def _task_of(h5file, path: Path) -> str:
    data = h5file["data"]
    info = data.attrs.get("problem_info")
    if info is not None:
        try:
            text = json.loads(info if isinstance(info, str) else info.decode()).get("language_instruction")
            if text:
                return " ".join(str(text).split())
        except (ValueError, AttributeError):
            pass
    return task_from_filename(path)


def noop_mask(actions: np.ndarray) -> np.ndarray:
    """True for no-op steps (no motion and the same gripper command as before), as the
    `no_noops` LIBERO regenerations drop them."""
    keep = np.ones(len(actions), dtype=bool)
    prev_gripper = None
    for t, a in enumerate(actions):
        if np.linalg.norm(a[:-1]) < 1e-4 and prev_gripper is not None and a[-1] == prev_gripper:
            keep[t] = False
        prev_gripper = a[-1]
    return ~keep


def _demo_names(data) -> list[str]:
    return sorted(data.keys(), key=lambda k: int(re.sub(r"\D", "", k) or 0))


def convert_libero_hdf5(hdf5_paths: Iterable[str | os.PathLike], out_root: str | os.PathLike, *,
                        image_size: int = 256, fps: float = LIBERO_FPS, drop_noops: bool = True,
                        vcodec: str = "libx264", chunks_size: int = 1000) -> LeRobotWriter:
    """Convert LIBERO demonstration files (robomimic layout) to a v2.1 dataset at `out_root`.

    Each file: `data/demo_N/obs/{agentview_rgb, eye_in_hand_rgb, ee_pos, ee_ori, gripper_states}`
    and `data/demo_N/actions`. Re-running appends after the last complete episode, so only
    demos not yet written should be passed again.
    """
    import h5py

    from vla.data.image_ops import resize_images  # torch: the recorder imports this module without it

    # The writer's context closes it (and releases its lock) on every path, a refused file included.
    with LeRobotWriter(out_root, fps=fps, features=libero_features(image_size), robot_type="panda",
                       chunks_size=chunks_size, vcodec=vcodec) as writer:
        for path in map(Path, hdf5_paths):
            with h5py.File(path, "r") as f:
                if "data" not in f:
                    raise ValueError(f"{path}: no 'data' group; not a LIBERO/robomimic demonstration file")
                task = _task_of(f, path)
                for name in _demo_names(f["data"]):
                    demo = f["data"][name]
                    where = f"{path}: data/{name}"
                    try:
                        obs = demo["obs"]
                        actions = np.asarray(demo["actions"], dtype=np.float32)
                        state = np.concatenate([np.asarray(obs["ee_pos"]), np.asarray(obs["ee_ori"]),
                                                np.asarray(obs["gripper_states"])], axis=1).astype(np.float32)
                        agent = np.asarray(obs["agentview_rgb"])
                        wrist = np.asarray(obs["eye_in_hand_rgb"])
                    except KeyError as exc:
                        raise ValueError(f"{where}: missing {exc.args[0]!r}") from None
                    if not (len(actions) == len(state) == len(agent) == len(wrist)):
                        raise ValueError(f"{where}: lengths differ: actions {len(actions)}, state {len(state)}, "
                                         f"agentview {len(agent)}, eye_in_hand {len(wrist)}")
                    keep = ~noop_mask(actions) if drop_noops else np.ones(len(actions), dtype=bool)
                    if not keep.any():
                        continue
                    writer.add_episode({
                        IMAGE_KEY: resize_images(rotate_180(agent[keep]), image_size, image_size),
                        WRIST_IMAGE_KEY: resize_images(rotate_180(wrist[keep]), image_size, image_size),
                        STATE_KEY: state[keep],
                        ACTION_KEY: actions[keep],
                    }, task=task)
    return writer
