"""Observation schema validation: every bad input gets INVALID_ARGUMENT naming the key.

An observation carries either the simulator's keys or openpi's LIBERO keys
(vla.wire.protocol.SIM_KEYS / OPENPI_KEYS) plus `prompt`. Arrays are checked for dtype,
shape and finite values before a request is queued, so nothing malformed reaches a model.
Keys outside the schema are passed through untouched (scripted policies read a few).
"""
from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np

from vla.wire import protocol
from vla.wire.errors import ErrorCode, PolicyError
from vla.wire.server_info import InputSpec

MAX_IMAGE_SIDE = 2048
# Smaller images carry no picture a policy can use; they are refused, never silently upscaled.
MIN_IMAGE_SIDE = 16
MAX_PROMPT_CHARS = 2000
MAX_KEYS = 64

_DESCRIPTIONS = {
    "agentview_image": "main camera, uint8 HxWx3 as LIBERO renders it (the server rotates it 180°)",
    "robot0_eye_in_hand_image": "wrist camera, uint8 HxWx3 as LIBERO renders it",
    "robot0_eef_pos": "end-effector position (3)",
    "robot0_eef_quat": "end-effector orientation quaternion x,y,z,w (4)",
    "robot0_gripper_qpos": "gripper joint positions (2)",
    "observation/image": "openpi key: main camera already rotated 180° (as openpi's LIBERO client sends)",
    "observation/wrist_image": "openpi key: wrist camera already rotated 180°",
    "observation/state": "openpi key: eef_pos(3) + axis-angle(3) + gripper qpos(2)",
    protocol.PROMPT_KEY: "task instruction",
    protocol.SEED_KEY: "optional int seed of the flow-matching noise (absent: fresh noise per request)",
}


def _spec(key: str, dtype: str, shape: tuple[int, ...], required: bool) -> InputSpec:
    return InputSpec(key, dtype, tuple(shape), required, _DESCRIPTIONS.get(key, ""))


# Either key set is complete on its own, so neither is individually required.
LIBERO_INPUT_SPECS: tuple[InputSpec, ...] = (
    *(_spec(k, d, s, False) for k, (d, s) in protocol.SIM_KEYS.items()),
    *(_spec(k, d, s, False) for k, (d, s) in protocol.OPENPI_KEYS.items()),
    _spec(protocol.PROMPT_KEY, "str", (), True),
    _spec(protocol.SEED_KEY, "int64", (), False),
)


def invalid(key: str, message: str) -> PolicyError:
    return PolicyError(ErrorCode.INVALID_ARGUMENT, f"{key!r}: {message}")


def key_set(obs: Mapping[str, Any]) -> str:
    """'sim' or 'openpi': which observation layout `obs` uses (raises naming what is missing)."""
    sim = [k for k in protocol.SIM_KEYS if k in obs]
    openpi = [k for k in protocol.OPENPI_KEYS if k in obs]
    if sim and len(sim) >= len(openpi):
        name, keys, have = "sim", protocol.SIM_KEYS, sim
    elif openpi:
        name, keys, have = "openpi", protocol.OPENPI_KEYS, openpi
    else:
        raise PolicyError(ErrorCode.INVALID_ARGUMENT,
                          f"observation has none of the expected keys: send either {sorted(protocol.SIM_KEYS)} "
                          f"or {sorted(protocol.OPENPI_KEYS)} (got {sorted(obs)[:10]})")
    missing = [k for k in keys if k not in have]
    if missing:
        raise PolicyError(ErrorCode.INVALID_ARGUMENT,
                          f"missing key{'s' if len(missing) > 1 else ''} {missing} "
                          f"(the {name} observation layout needs {sorted(keys)})")
    return name


def _check_array(key: str, value: Any, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        if isinstance(value, (list, tuple)):
            raise invalid(key, "arrays must be sent as numpy arrays (msgpack-numpy) or JSON lists on HTTP")
        raise invalid(key, f"expected a {dtype} array of shape {list(shape)}, got {type(value).__name__}")
    if dtype == "uint8" and value.dtype != np.uint8:
        raise invalid(key, f"expected dtype uint8, got {value.dtype}")
    if dtype == "float" and value.dtype.kind != "f":
        raise invalid(key, f"expected a floating dtype, got {value.dtype}")
    if value.ndim != len(shape) or any(s != -1 and s != d for s, d in zip(shape, value.shape)):
        want = "x".join("N" if s == -1 else str(s) for s in shape)
        raise invalid(key, f"expected shape {want}, got {list(value.shape)}")
    if dtype == "uint8" and value.ndim == 3:
        h, w = value.shape[:2]
        if not (MIN_IMAGE_SIDE <= h <= MAX_IMAGE_SIDE and MIN_IMAGE_SIDE <= w <= MAX_IMAGE_SIDE):
            raise invalid(key, f"image sides must be {MIN_IMAGE_SIDE}..{MAX_IMAGE_SIDE} pixels, got {h}x{w}")
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise invalid(key, "contains NaN or infinite values")
    return value


def validate_observation(obs: Any) -> dict[str, Any]:
    """Check one observation; returns it (a plain dict) or raises INVALID_ARGUMENT."""
    if not isinstance(obs, Mapping):
        raise PolicyError(ErrorCode.INVALID_ARGUMENT,
                          f"an observation must be a map of key -> value, got {type(obs).__name__}")
    if len(obs) > MAX_KEYS:
        raise PolicyError(ErrorCode.INVALID_ARGUMENT, f"observation has {len(obs)} keys, over the limit {MAX_KEYS}")
    bad_keys = [k for k in obs if not isinstance(k, str)]
    if bad_keys:
        raise PolicyError(ErrorCode.INVALID_ARGUMENT, f"observation keys must be strings, got {bad_keys[:3]!r}")
    out = dict(obs)
    keys = protocol.SIM_KEYS if key_set(obs) == "sim" else protocol.OPENPI_KEYS
    for key, (dtype, shape) in keys.items():
        out[key] = _check_array(key, obs[key], dtype, shape)
    prompt = obs.get(protocol.PROMPT_KEY)
    if prompt is None:
        raise invalid(protocol.PROMPT_KEY, "missing key (the task instruction)")
    if not isinstance(prompt, str):
        raise invalid(protocol.PROMPT_KEY, f"expected a string, got {type(prompt).__name__}")
    if not prompt.strip() or len(prompt) > MAX_PROMPT_CHARS:
        raise invalid(protocol.PROMPT_KEY, f"must be 1..{MAX_PROMPT_CHARS} characters, got {len(prompt)}")
    if obs.get(protocol.SEED_KEY) is not None:
        out[protocol.SEED_KEY] = _seed(obs[protocol.SEED_KEY])
    return out


def _seed(value: Any) -> int:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise invalid(protocol.SEED_KEY, f"expected an integer, got {type(value).__name__}")
    if not 0 <= int(value) <= protocol.MAX_SEED:
        raise invalid(protocol.SEED_KEY, f"must be in [0, 2**63), got {int(value)}")
    return int(value)


def parse_json(body: bytes) -> Any:
    """A JSON request body as an observation (arrays for the schema keys)."""
    try:
        return from_json(json.loads(body))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(ErrorCode.INVALID_ARGUMENT, f"malformed JSON body: {exc}") from None


def from_json(obs: Any) -> Any:
    """JSON bodies carry arrays as nested lists: turn schema keys into arrays of their dtype."""
    if not isinstance(obs, dict):
        return obs
    out = dict(obs)
    for key, (dtype, _shape) in {**protocol.SIM_KEYS, **protocol.OPENPI_KEYS}.items():
        value = out.get(key)
        if not isinstance(value, list):
            continue
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError):
            raise invalid(key, "ragged or non-numeric JSON array") from None
        if arr.dtype.kind not in "iuf" or arr.dtype == object:
            raise invalid(key, f"expected numbers, got JSON values of type {arr.dtype}")
        if dtype == "uint8":
            if arr.dtype.kind == "f" or (arr.size and (arr.min() < 0 or arr.max() > 255)):
                raise invalid(key, "image values must be integers in 0..255")
            arr = arr.astype(np.uint8)
        else:
            arr = arr.astype(np.float64)
        out[key] = arr
    return out


def example_observation(height: int = 256, width: int = 256, layout: str = "sim") -> dict[str, Any]:
    """A LIBERO-size observation (warm-up, tests, benchmarks)."""
    rng = np.random.default_rng(0)
    if layout == "openpi":
        return {
            "observation/image": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
            "observation/wrist_image": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
            "observation/state": np.zeros(8, dtype=np.float64),
            protocol.PROMPT_KEY: "warm up",
        }
    return {
        "agentview_image": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        "robot0_eye_in_hand_image": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        "robot0_eef_pos": np.array([-0.2, 0.0, 1.1]),
        "robot0_eef_quat": np.array([1.0, 0.0, 0.0, 0.0]),
        "robot0_gripper_qpos": np.array([0.04, -0.04]),
        protocol.PROMPT_KEY: "warm up",
    }
