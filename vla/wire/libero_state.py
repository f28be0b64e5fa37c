"""The LIBERO proprio state of openpi's wire layout (`observation/state`, DESIGN §3), numpy only:
the sim client builds it for openpi servers and the policy server for its models, from the same code."""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def libero_state(obs: dict[str, Any]) -> np.ndarray:
    """The 8-dim LIBERO state, float64: eef position + axis-angle + gripper qpos (openpi's observation/state)."""
    return np.concatenate([obs["robot0_eef_pos"], quat2axisangle(obs["robot0_eef_quat"]),
                           obs["robot0_gripper_qpos"]]).astype(np.float64)


def quat2axisangle(quat: np.ndarray) -> np.ndarray:
    """x-y-z-w quaternion → axis-angle (robosuite's convention, as openpi's client computes it)."""
    quat = np.array(quat, dtype=np.float64)
    w = min(max(quat[3], -1.0), 1.0)
    den = math.sqrt(1.0 - w * w)
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return quat[:3] * 2.0 * math.acos(w) / den
