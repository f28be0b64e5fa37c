"""Eval transforms (the `eval` section of FluxVLA's LIBERO guide), registered under its names.

They live next to the training transforms (vla/data/transforms.py), share their required-key
helper and error type (`vla.data.errors.require`, `TransformError`: the policy server answers it
with INVALID_ARGUMENT) and their image and prompt functions.

One observation flows through them in config order, then the model, then the action
transform:

    ProcessLiberoEvalInputs   sim keys or openpi keys -> `images` uint8 [N, H, W, 3] (training
                              orientation), `img_masks`, `prompt` (cleaned as in training),
                              `embodiment_ids`; openpi's `observation/state` kept as `libero_state`
    TransformImage            `images` -> float32 [N, 3, h, w] (resize-naive + per-camera mean/std)
    LiberoPromptFromInputs /
    ProcessPromptsWithImage   `prompt` -> `lang_tokens`, `lang_masks` (same tokenisation as training)
    LiberoProprioFromInputs   eef_pos(3) + axis-angle(quat)(3) + gripper qpos(2) = 8, normalised with
                              the `proprio` statistics, zero-padded to the model's `state_dim`
    DenormalizeLiberoAction   model output [chunk, A'] -> [chunk, 7] in LIBERO's units

Which frames to turn is decided here and only here: LIBERO renders upside down and the training
data (LeRobot conversions) hold frames rotated by 180° (`vla.libero.rotate_180`), so sim-key
frames are rotated; openpi's client has already rotated its frames, so openpi-key frames are
used as sent.

The engine binds the work dir's statistics and the model's `state_dim` into the transforms that
need them (`vla.data.binding.bind_statistics`), so configs stay as FluxVLA's LIBERO guide writes them.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from vla.config import build, register
from vla.data.errors import TransformError, require
from vla.data.image_ops import normalize_images, resize_images
from vla.data.prompts import PromptTokenizer, build_prompt
from vla.libero import (CAMERA_KEYS, EEF_POS_KEY, EEF_QUAT_KEY, GRIPPER_QPOS_KEY, OPENPI_CAMERA_KEYS,
                        OPENPI_STATE_KEY, libero_state, rotate_180)
from vla.normalize import DatasetStatistics, Normalizer

STATE_SAMPLE_KEY = "libero_state"   # openpi's ready-made 8-dim state, carried to LiberoProprioFromInputs


@register
class ProcessLiberoEvalInputs:
    """Gather the camera frames named by `img_keys` (sim keys; their openpi twins are accepted
    too) into `images`, in the training data's orientation."""

    def __init__(self, img_keys: Sequence[str] = CAMERA_KEYS, embodiment_id: int | None = None):
        self.img_keys = list(img_keys)
        self.embodiment_id = embodiment_id

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        if all(k in data for k in self.img_keys):
            frames = [rotate_180(np.asarray(data[k])) for k in self.img_keys]
        else:
            keys = [OPENPI_CAMERA_KEYS.get(k, k) for k in self.img_keys]
            frames = [np.asarray(require(data, k, "ProcessLiberoEvalInputs")) for k in keys]
            if OPENPI_STATE_KEY in data:
                data[STATE_SAMPLE_KEY] = np.asarray(data[OPENPI_STATE_KEY], dtype=np.float64)
        # Cameras may differ in size; TransformImage resizes each to its own input size.
        data["images"] = frames
        data["img_masks"] = np.ones(len(frames), dtype=bool)
        data["prompt"] = build_prompt(require(data, "prompt", "ProcessLiberoEvalInputs"))
        if self.embodiment_id is not None:
            data["embodiment_ids"] = np.int64(self.embodiment_id)
        return data


@register
class TransformImage:
    """Resize each camera to its `input_sizes` [3, h, w] and normalise with its mean/std (0..255).

    'resize-naive' stretches to the target size (no padding), with the same resize the training
    pipeline's ResizeImages uses, so a frame is processed identically in both."""

    STRATEGIES = ("resize-naive",)

    def __init__(self, input_sizes: Sequence[Sequence[int]], means: Sequence[Sequence[float]],
                 stds: Sequence[Sequence[float]], image_resize_strategy: str = "resize-naive"):
        if image_resize_strategy not in self.STRATEGIES:
            raise ValueError(f"image_resize_strategy {image_resize_strategy!r} is not supported; "
                             f"use one of {self.STRATEGIES}")
        self.input_sizes = [tuple(int(v) for v in s) for s in input_sizes]
        if any(len(s) != 3 or s[0] != 3 for s in self.input_sizes):
            raise ValueError(f"input_sizes must be [[3, h, w], ...], got {input_sizes}")
        self.means = np.asarray(means, dtype=np.float32)
        self.stds = np.asarray(stds, dtype=np.float32)
        if self.means.shape != (len(self.input_sizes), 3) or self.stds.shape != self.means.shape:
            raise ValueError(f"means {self.means.shape} and stds {self.stds.shape} must be "
                             f"[{len(self.input_sizes)} cameras, 3]")

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        frames = require(data, "images", "TransformImage")
        if len(frames) != len(self.input_sizes):
            raise TransformError(f"TransformImage: {len(frames)} cameras but {len(self.input_sizes)} input_sizes")
        shapes = {np.shape(f) for f in frames}
        if len(shapes) == 1 and len(set(self.input_sizes)) == 1:   # the usual case: one call for all cameras
            _, h, w = self.input_sizes[0]
            data["images"] = normalize_images(resize_images(np.stack(frames), h, w), self.means, self.stds)
            return data
        out = [normalize_images(resize_images(frame, h, w), self.means[i:i + 1], self.stds[i:i + 1])[0]
               for i, (frame, (_, h, w)) in enumerate(zip(frames, self.input_sizes))]
        data["images"] = np.stack(out)
        return data


@register
class LiberoPromptFromInputs:
    """Tokenise the observation's `prompt` exactly as the training pipeline's ProcessPrompts does."""

    def __init__(self, tokenizer: Any, max_len: int = 180):
        self.tokenizer = build(tokenizer) if isinstance(tokenizer, dict) else tokenizer
        self.max_len = int(max_len)
        self.encode = PromptTokenizer(self.tokenizer, self.max_len)

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        data["lang_tokens"], data["lang_masks"] = self.encode(require(data, "prompt", "LiberoPromptFromInputs"))
        return data


@register
class LiberoProprioFromInputs:
    """`out_key` = normalised [eef_pos, axis-angle(eef_quat), gripper_qpos], zero-padded to `state_dim`."""

    def __init__(self, use_quantiles: bool = False, pos_key: str = EEF_POS_KEY,
                 quat_key: str = EEF_QUAT_KEY, gripper_key: str = GRIPPER_QPOS_KEY,
                 out_key: str = "states", state_dim: int | None = None):
        self.use_quantiles = bool(use_quantiles)
        self.pos_key, self.quat_key, self.gripper_key, self.out_key = pos_key, quat_key, gripper_key, out_key
        self.state_dim = state_dim
        self.normalizer: Normalizer | None = None

    def bind(self, statistics: DatasetStatistics, state_dim: int | None = None, **_: Any) -> None:
        self.normalizer = Normalizer.from_quantiles_flag(statistics.proprio, self.use_quantiles,
                                                         name="proprio (dataset_statistics.json)")
        if self.state_dim is None:
            self.state_dim = state_dim

    @staticmethod
    def raw_state(data: dict[str, Any], pos_key: str, quat_key: str, gripper_key: str) -> np.ndarray:
        if STATE_SAMPLE_KEY in data and pos_key not in data:
            return np.asarray(data[STATE_SAMPLE_KEY], dtype=np.float64)
        who = "LiberoProprioFromInputs"
        return libero_state({EEF_POS_KEY: require(data, pos_key, who), EEF_QUAT_KEY: require(data, quat_key, who),
                             GRIPPER_QPOS_KEY: require(data, gripper_key, who)})

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        if self.normalizer is None:
            raise TransformError("LiberoProprioFromInputs: no statistics bound (the engine binds them)")
        state = self.raw_state(data, self.pos_key, self.quat_key, self.gripper_key)
        try:
            state = self.normalizer.normalize(state)
        except ValueError as exc:
            raise TransformError(f"LiberoProprioFromInputs: {exc}") from None
        if self.state_dim is not None:
            if len(state) > self.state_dim:
                raise TransformError(f"LiberoProprioFromInputs: proprio has {len(state)} dims, "
                                         f"more than the model's state_dim {self.state_dim}")
            state = np.concatenate([state, np.zeros(self.state_dim - len(state))])
        data[self.out_key] = state.astype(np.float32)
        return data


@register
class DenormalizeLiberoAction:
    """Model output (normalised, padded) [..., chunk, A'] -> LIBERO actions [..., chunk, action_dim].

    The engine calls it once per batch ([B, chunk, A']): every step is elementwise over the last
    axis, so each row comes out as a call on that chunk alone gives.

    Denormalise with the `action` statistics (their `mask` leaves the gripper as it is), keep the
    first `action_dim` (7) dims, then make the gripper a ±1 command with LIBERO's sign (-1 open,
    +1 close). `gripper_convention` says how the training data stored the gripper:
      'libero'  ±1 as LIBERO takes it (openpi's LeRobot conversions, this repo's datasets): binarise.
      'openvla' [0, 1] with 1 = open (OpenVLA's RLDS; FluxVLA's normalize_gripper_action +
                invert_gripper_action): map to [-1, 1], binarise, invert.
      'auto'    'openvla' if the action statistics' gripper minimum is >= 0, else 'libero'.
    """

    CONVENTIONS = ("auto", "libero", "openvla")

    def __init__(self, use_quantiles: bool = False, action_dim: int = 7, gripper_convention: str = "auto"):
        if gripper_convention not in self.CONVENTIONS:
            raise ValueError(f"gripper_convention {gripper_convention!r}: use one of {self.CONVENTIONS}")
        self.use_quantiles = bool(use_quantiles)
        self.action_dim = int(action_dim)
        self.gripper_convention = gripper_convention
        self.normalizer: Normalizer | None = None
        self.convention = gripper_convention

    def bind(self, statistics: DatasetStatistics, **_: Any) -> None:
        stats = statistics.action
        if stats.dim < self.action_dim:
            raise ValueError(f"DenormalizeLiberoAction: action statistics have {stats.dim} dims, "
                             f"fewer than action_dim {self.action_dim}")
        self.normalizer = Normalizer.from_quantiles_flag(stats, self.use_quantiles, name="action (dataset_statistics.json)")
        if self.gripper_convention == "auto":
            self.convention = "openvla" if stats.min[self.action_dim - 1] >= 0 else "libero"

    def __call__(self, actions: np.ndarray) -> np.ndarray:
        if self.normalizer is None:
            raise TransformError("DenormalizeLiberoAction: no statistics bound (the engine binds them)")
        actions = np.asarray(actions, dtype=np.float64)
        dim = self.normalizer.dim
        if actions.shape[-1] < dim:
            raise TransformError(f"DenormalizeLiberoAction: model gave {actions.shape[-1]} action dims, "
                                     f"the statistics have {dim}")
        out = self.normalizer.denormalize(actions[..., :dim])[..., :self.action_dim].copy()
        g = out[..., -1]
        if self.convention == "openvla":
            g = -np.where(2.0 * g - 1.0 >= 0, 1.0, -1.0)
        else:
            g = np.where(g >= 0, 1.0, -1.0)
        out[..., -1] = g
        return out.astype(np.float32)
