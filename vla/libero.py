"""What a LIBERO observation is: camera keys and their openpi names, the 180° flip, the 8-dim state.

numpy only (the sim client imports it and never loads torch). Every process that touches a
LIBERO frame or state uses these, so the sim client, the demo recorder, the dataset converter,
the training transforms and the eval transforms cannot disagree:

    CAMERA_KEYS          the simulator's camera observations (agentview, then the wrist camera)
    OPENPI_CAMERA_KEYS   sim camera key -> openpi's LIBERO key (`observation/image`, ...)
    rotate_180(image)    LIBERO renders upside down; upright frames (the LeRobot conversions,
                         videos, openpi's requests) are the render rotated by 180°
    libero_state(obs)    eef position(3) + axis-angle of the eef quaternion(3) + gripper qpos(2),
                         openpi's `observation/state` and the datasets' `observation.state`
"""
from __future__ import annotations

import math
import sys
from typing import Any, Mapping

import numpy as np

AGENTVIEW_KEY = "agentview_image"
WRIST_KEY = "robot0_eye_in_hand_image"
CAMERA_KEYS = (AGENTVIEW_KEY, WRIST_KEY)
EEF_POS_KEY = "robot0_eef_pos"
EEF_QUAT_KEY = "robot0_eef_quat"          # x, y, z, w
GRIPPER_QPOS_KEY = "robot0_gripper_qpos"
PROPRIO_KEYS = (EEF_POS_KEY, EEF_QUAT_KEY, GRIPPER_QPOS_KEY)

OPENPI_CAMERA_KEYS = {AGENTVIEW_KEY: "observation/image", WRIST_KEY: "observation/wrist_image"}
OPENPI_STATE_KEY = "observation/state"
STATE_DIM = 8


def rotate_180(image: np.ndarray) -> np.ndarray:
    """An H×W×C frame (or a stack [..., H, W, C]) rotated by 180°, as a new C-contiguous array.

    In a process that has already loaded torch (the policy server, the trainer) the copy is done
    by torch.flip, ~100× faster than numpy's copy through two negative strides (0.005 ms vs
    0.5 ms for 256×256×3); the pixels are the same. This module never imports torch itself.
    """
    img = np.asarray(image)
    if img.ndim < 3:
        raise ValueError(f"rotate_180 expects [..., H, W, C], got shape {img.shape}")
    torch = sys.modules.get("torch")
    if torch is not None and img.dtype.kind in "uif" and img.dtype.isnative and img.flags.c_contiguous:
        if not img.flags.writeable:   # a decoded frame is a read-only view of the request bytes
            img = img.copy()            # (torch warns on those); a straight copy is cheap
        return torch.from_numpy(img).flip(-3, -2).numpy()
    return np.ascontiguousarray(img[..., ::-1, ::-1, :])


def libero_state(obs: Mapping[str, Any]) -> np.ndarray:
    """The 8-dim LIBERO state, float64: eef position + axis-angle(eef quaternion) + gripper qpos."""
    return np.concatenate([np.asarray(obs[EEF_POS_KEY], dtype=np.float64), quat2axisangle(obs[EEF_QUAT_KEY]),
                           np.asarray(obs[GRIPPER_QPOS_KEY], dtype=np.float64)])


def quat2axisangle(quat: np.ndarray) -> np.ndarray:
    """x-y-z-w quaternion → axis-angle (robosuite's convention, as openpi's LIBERO client computes it)."""
    quat = np.array(quat, dtype=np.float64)
    w = min(max(quat[3], -1.0), 1.0)
    den = math.sqrt(1.0 - w * w)
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return quat[:3] * 2.0 * math.acos(w) / den
