"""FluxVLA's per-sample transforms, registered under its names with its parameters.

A sample from `ParquetDataset` flows through them in config order:

    ProcessParquetInputs        parquet columns (renamed), camera frames -> `images` uint8 [N, H, W, 3]
    ParquetPrompter             `task_description` -> `prompt`
    ProcessPrompts /
    ProcessPromptsWithImage     `prompt` -> `lang_tokens` int64 [L], `lang_masks` bool [L]
    ResizeImages                `images` -> uint8 [N, h, w, 3]
    RandomShiftImages           (training only) `images` shifted by up to ±pad pixels per camera
    NormalizeImages             `images` -> float32 [N, 3, h, w]
    NormalizeStatesAndActions   `states` [S'], `actions` [T, A'] normalised and padded, `action_masks`

The image and prompt work is done by plain functions (`vla.data.image_ops`,
`vla.data.prompts`) that the eval transforms (`vla.data.eval_transforms`) call too. Statistics
are bound once, at construction (`bind`, vla/data/binding.py); samples do not carry them.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from vla.config import build, register
from vla.data.errors import DatasetError, TransformError, require
from vla.data.image_ops import normalize_images, random_shift_images, resize_images
from vla.data.prompts import ImagePromptTokenizer, PromptTokenizer, build_prompt
from vla.normalize import DatasetStatistics, FeatureStats, Normalizer
from vla.run_info import PromptSettings

# Keys every sample keeps through ProcessParquetInputs (meta data for logging and debugging).
PASSTHROUGH_KEYS = ("task_description", "episode_index", "frame_index", "data_root")
# Keys FluxVLA's configs list in `parquet_keys` (and the collator's `meta_keys`) from when every
# sample carried the dataset's info.json and statistics. Statistics are now bound into the
# transforms once (vla/data/binding.py), so samples no longer carry either: these names are
# accepted and skipped, and the collator leaves out a meta key no sample has.
BOUND_KEYS = ("info", "stats")


def _tokenizer(tokenizer: Any) -> Any:
    return build(tokenizer) if isinstance(tokenizer, dict) else tokenizer


@register
class ProcessParquetInputs:
    """Select `parquet_keys` (renamed by `name_mappings`, one key may map to several names),
    decode the `video_keys` cameras into `images` / `img_masks`, add `embodiment_ids`.
    `info` and `stats` in `parquet_keys` are accepted and skipped (BOUND_KEYS)."""

    def __init__(self, parquet_keys: Sequence[str], video_keys: Sequence[str] = (),
                 name_mappings: Mapping[str, Any] | None = None, embodiment_id: int | None = None):
        self.parquet_keys = [k for k in parquet_keys if k not in BOUND_KEYS]
        self.video_keys = list(video_keys)
        self.name_mappings = {k: [v] if isinstance(v, str) else list(v) for k, v in (name_mappings or {}).items()}
        self.embodiment_id = embodiment_id

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {k: data[k] for k in PASSTHROUGH_KEYS if k in data}
        for key in self.parquet_keys:
            value = require(data, key, "ProcessParquetInputs.parquet_keys")
            for name in self.name_mappings.get(key, [key]):
                out[name] = value
        if self.video_keys:
            frame_source = require(data, "frame_source", "ProcessParquetInputs.video_keys")
            out["images"] = np.stack([frame_source(key) for key in self.video_keys])
            out["img_masks"] = np.ones(len(self.video_keys), dtype=bool)
        if self.embodiment_id is not None:
            out["embodiment_ids"] = np.int64(self.embodiment_id)
        return out


@register
class ParquetPrompter:
    """`prompt` = the cleaned task description (`vla.data.prompts.build_prompt`)."""

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        data["prompt"] = build_prompt(require(data, "task_description", "ParquetPrompter"))
        return data


@register
class ProcessPrompts:
    """Tokenise `prompt` into `lang_tokens` / `lang_masks` of length `max_len` (right-padded)."""

    def __init__(self, tokenizer: Any, max_len: int = 180):
        self.tokenizer = _tokenizer(tokenizer)
        self.max_len = int(max_len)
        self.encode = PromptTokenizer(self.tokenizer, self.max_len)

    def settings(self) -> PromptSettings:
        return PromptSettings(type(self).__name__, self.max_len, getattr(self.tokenizer, "model_path", None))

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        prompt = require(data, "prompt", "ProcessPrompts")
        data["lang_tokens"], data["lang_masks"] = self.encode(prompt)
        return data


@register
class ProcessPromptsWithImage:
    """Like ProcessPrompts, with `num_images` × `tokens_per_image` image placeholder tokens before the
    text; the model puts its vision features there. `image_token` defaults to the first of
    `<IMG_CONTEXT>` / `<image>` the tokenizer knows. `tokens_per_image` left unset (the guide's config) is
    taken from the model: the trainer and the server call `bind_model(tokens_per_image=model.tokens_per_image)`;
    a value that is set must equal the model's."""

    def __init__(self, tokenizer: Any, max_len: int = 180, num_images: int = 2, tokens_per_image: int | None = None,
                 image_token: str | None = None):
        self.tokenizer = _tokenizer(tokenizer)
        self.max_len = int(max_len)
        self.num_images = int(num_images)
        self.image_token = image_token
        self.tokens_per_image = None if tokens_per_image is None else int(tokens_per_image)
        self.encode = None if tokens_per_image is None else self._encoder()

    def _encoder(self) -> ImagePromptTokenizer:
        return ImagePromptTokenizer(self.tokenizer, self.max_len, self.num_images, self.tokens_per_image,
                                    self.image_token)

    def bind_model(self, tokens_per_image: int) -> None:
        """Take the image-token count from the model (`tokens_per_image` of its vision backbone)."""
        if self.tokens_per_image is not None and self.tokens_per_image != int(tokens_per_image):
            raise ValueError(f"ProcessPromptsWithImage.tokens_per_image={self.tokens_per_image} but the model makes "
                             f"{tokens_per_image} vision tokens per image; write tokens_per_image="
                             f"{tokens_per_image} or leave it out (it is taken from the model)")
        if self.encode is None:
            self.tokens_per_image = int(tokens_per_image)
            self.encode = self._encoder()

    settings = ProcessPrompts.settings

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        if self.encode is None:
            raise ValueError("ProcessPromptsWithImage: tokens_per_image is not known yet: it is taken from the "
                             "model when the trainer or server binds it; outside them write tokens_per_image=N "
                             "(GR00T-N1.5's Eagle at 224x224: 256)")
        prompt = require(data, "prompt", "ProcessPromptsWithImage")
        data["lang_tokens"], data["lang_masks"] = self.encode(prompt)
        return data


@register
class ResizeImages:
    """Resize every camera image to `height` × `width` (bilinear, antialiased, no padding)."""

    def __init__(self, height: int = 224, width: int = 224):
        self.height, self.width = int(height), int(width)

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        data["images"] = resize_images(require(data, "images", "ResizeImages"), self.height, self.width)
        return data


@register
class RandomShiftImages:
    """Training augmentation: shift every camera image by a random offset of up to ±`pad` pixels
    (edge-padded, then cropped back to its size), a fresh offset per camera and sample.

    Small-data behaviour cloning from pixels overfits to exact pixel positions; random shifts
    (DrQ, Kostrikov et al. 2020) are the standard remedy. Place it after ResizeImages (the pad is
    in pixels of the resized image) and before NormalizeImages; it belongs to training only, the
    eval pipeline has no counterpart. `pad=0` turns it off."""

    def __init__(self, pad: int = 4):
        if int(pad) != pad or pad < 0:
            raise ValueError(f"RandomShiftImages: pad must be a non-negative integer, got {pad!r}")
        self.pad = int(pad)

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        data["images"] = random_shift_images(require(data, "images", "RandomShiftImages"), self.pad)
        return data


@register
class NormalizeImages:
    """uint8 images -> float32 [N, 3, H, W] with one mean/std triple (0..255 scale) per camera."""

    def __init__(self, means: Sequence[Sequence[float]], stds: Sequence[Sequence[float]]):
        self.means = np.asarray(means, dtype=np.float32)
        self.stds = np.asarray(stds, dtype=np.float32)
        if self.means.shape != self.stds.shape or self.means.shape[-1] != 3:
            raise ValueError(f"means {self.means.shape} and stds {self.stds.shape} must both be [cameras, 3]")

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        images = require(data, "images", "NormalizeImages")
        n = len(images)
        if self.means.ndim == 2 and len(self.means) != n:
            raise DatasetError(f"NormalizeImages: {len(self.means)} means/stds for {n} cameras")
        data["images"] = normalize_images(images, self.means, self.stds)
        return data


def feature_stats(stats: DatasetStatistics, key: str) -> FeatureStats:
    """The block `key` of a DatasetStatistics."""
    if key == "action":
        return stats.action
    if key == "proprio":
        return stats.proprio
    if key in stats.extra:
        return stats.extra[key]
    raise DatasetError(f"statistics have no block {key!r}; they have "
                       f"{['action', 'proprio', *sorted(stats.extra)]}")


def pad_last(x: np.ndarray, dim: int, what: str) -> np.ndarray:
    """Zero-pad the last axis to `dim` (an error if it is already longer)."""
    if x.shape[-1] > dim:
        raise DatasetError(f"{what} has {x.shape[-1]} dims, more than the padded size {dim}")
    if x.shape[-1] == dim:
        return x
    pad = np.zeros((*x.shape[:-1], dim - x.shape[-1]), dtype=x.dtype)
    return np.concatenate([x, pad], axis=-1)


@register
class NormalizeStatesAndActions:
    """Normalise `states` with the `state_key` statistics and `actions` with the `action_key`
    ones (mean/std, or q01/q99 with `use_quantiles`); pad actions to `action_dim` (and states to
    `state_dim` if given) with zeros; `action_masks` bool [T, action_dim] is False for padded
    dimensions and for window steps past the episode end."""

    def __init__(self, action_dim: int | None = None, state_key: str = "proprio", action_key: str = "action",
                 use_quantiles: bool = False, state_dim: int | None = None):
        self.action_dim = action_dim
        self.state_dim = state_dim
        self.state_key = state_key
        self.action_key = action_key
        self.use_quantiles = bool(use_quantiles)
        self.state_norm: Normalizer | None = None
        self.action_norm: Normalizer | None = None

    def bind(self, statistics: DatasetStatistics, **_: Any) -> None:
        """The run's statistics, once (vla/data/binding.py)."""
        self.state_norm = Normalizer.from_quantiles_flag(feature_stats(statistics, self.state_key), self.use_quantiles,
                                                         name=f"states ({self.state_key} statistics)")
        self.action_norm = Normalizer.from_quantiles_flag(feature_stats(statistics, self.action_key),
                                                          self.use_quantiles,
                                                          name=f"actions ({self.action_key} statistics)")

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        state_norm, action_norm = self.state_norm, self.action_norm
        if state_norm is None or action_norm is None:
            raise TransformError("NormalizeStatesAndActions: no statistics bound; build the dataset inside "
                                 "DistributedRepeatingDataset or call its bind_statistics()")
        if "states" in data:
            states = state_norm.normalize(np.asarray(data["states"], dtype=np.float32))
            data["states"] = pad_last(states, self.state_dim, "states") if self.state_dim else states
        if "actions" in data:
            actions = action_norm.normalize(np.asarray(data["actions"], dtype=np.float32))
            steps = np.asarray(data.get("action_masks", np.ones(len(actions))), dtype=bool).reshape(-1)
            width = self.action_dim or actions.shape[-1]
            data["actions"] = pad_last(actions, width, "actions")
            dims = np.arange(width) < actions.shape[-1]
            data["action_masks"] = steps[:, None] & dims[None, :]
        return data
