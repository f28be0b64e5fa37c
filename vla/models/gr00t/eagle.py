"""`EagleBackbone`: GR00T-N1.5's Eagle 2.5 VLM, built from transformers modules at any size.

SigLIP vision tower -> (optional) pixel shuffle -> MLP projector `mlp1` -> Qwen3 LLM truncated to
`select_layer` layers. Image features replace the image placeholder tokens of the prompt; the LLM's
last kept layer (after its final norm, which is what GR00T's `hidden_states[select_layer]` reads) is
the feature sequence the action head attends to.

Module names mirror NVIDIA's `Eagle2_5_VLForConditionalGeneration` (`vision_model.vision_model.*`,
`mlp1.0.*`, `language_model.model.*`), so with the config's name_mapping
`{'vlm_backbone.vlm': 'backbone.eagle_model'}` a GR00T-N1.5 checkpoint loads by name. Two released
tensors GR00T never uses are not built: the LM head (GR00T reads hidden states, never logits) and the
SigLIP pooling head (GR00T reads patch tokens); `UNUSED_CHECKPOINT_PREFIXES` lists them.
"""
from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from vla.config import register
from vla.models.loading import CheckpointNotFoundError

log = logging.getLogger(__name__)

# GR00T-N1.5-3B's Eagle 2.5 config (NVEagle/eagle_er-qwen3_1_7B-Siglip2_400M_stage1_5_128gpu_er_v7_1mlp_nops;
# the `eagle2_hg_model/config.json` FluxVLA and Isaac-GR00T n1.5-release vendor): SigLIP so400m/14 at 224,
# no pixel shuffle, a one-layer projector, Qwen3-1.7B.
GR00T_N15_EAGLE_CONFIG: dict[str, Any] = {
    "downsample_ratio": 0.5,
    "force_image_size": 224,
    "image_token_index": 151669,
    "mlp_connector_layers": 1,
    "use_pixel_shuffle": False,
    "vision_config": {
        "hidden_act": "gelu_pytorch_tanh", "hidden_size": 1152, "image_size": 224, "intermediate_size": 4304,
        "layer_norm_eps": 1e-6, "num_attention_heads": 16, "num_channels": 3, "num_hidden_layers": 27,
        "patch_size": 14, "attention_dropout": 0.0,
    },
    "text_config": {
        "attention_bias": False, "attention_dropout": 0.0, "head_dim": 128, "hidden_act": "silu",
        "hidden_size": 2048, "intermediate_size": 6144, "max_position_embeddings": 40960,
        "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000, "tie_word_embeddings": True, "vocab_size": 151680,
    },
}
# Name of the vendored config directory FluxVLA's configs point `vlm_path` at.
VENDORED_EAGLE_DIR = "eagle2_hg_model"
# Checkpoint tensors (under the VLM prefix) of modules GR00T never runs; see the module docstring.
UNUSED_CHECKPOINT_PREFIXES = ("language_model.lm_head.", "vision_model.vision_model.head.")


def resolve_eagle_config(vlm_path: str | None, vlm_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The Eagle config: `vlm_path/config.json` if that directory exists, the built-in GR00T-N1.5
    config if `vlm_path` is unset or names the vendored `eagle2_hg_model` directory that is not here,
    then `vlm_config` merged over it (sub-dicts key by key)."""
    base: dict[str, Any]
    if vlm_path and Path(vlm_path).is_dir():
        cfg_file = Path(vlm_path) / "config.json"
        if not cfg_file.is_file():
            raise CheckpointNotFoundError(f"EagleBackbone.vlm_path={vlm_path!r} has no config.json")
        base = json.loads(cfg_file.read_text(encoding="utf-8"))
    elif not vlm_path or Path(str(vlm_path)).name == VENDORED_EAGLE_DIR:
        base = copy.deepcopy(GR00T_N15_EAGLE_CONFIG)
    else:
        raise CheckpointNotFoundError(f"EagleBackbone.vlm_path={vlm_path!r} is not a directory (expected an Eagle "
                                f"config directory, or a path ending in {VENDORED_EAGLE_DIR!r} for the built-in one)")
    for key, value in dict(vlm_config or {}).items():
        if isinstance(value, Mapping) and isinstance(base.get(key), Mapping):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


def pixel_shuffle(x: torch.Tensor, ratio: float) -> torch.Tensor:
    """[N, W, H, C] -> [N, W·r, H·r, C/r²] (r = ratio < 1): merge r⁻¹×r⁻¹ neighbours into channels,
    in the order InternVL/Eagle use (so a released `mlp1` sees its features in its own layout)."""
    n, w, h, c = x.shape
    x = x.reshape(n, w, int(h * ratio), int(c / ratio)).permute(0, 2, 1, 3)
    x = x.reshape(n, int(h * ratio), int(w * ratio), int(c / (ratio * ratio))).permute(0, 2, 1, 3)
    return x.contiguous()


class _VisionTower(nn.Module):
    """Holds the SigLIP model as `.vision_model`, giving the release's `vision_model.vision_model.*` names."""

    def __init__(self, config: Any):
        super().__init__()
        from transformers import SiglipVisionModel

        model = SiglipVisionModel(config)
        self.vision_model = getattr(model, "vision_model", model)  # transformers 4 nests it once more


class _LanguageModel(nn.Module):
    """Holds the Qwen3 decoder as `.model` (the release's `language_model.model.*`); no LM head."""

    def __init__(self, config: Any):
        super().__init__()
        from transformers import Qwen3Model

        self.model = Qwen3Model(config)


class EagleVLM(nn.Module):
    def __init__(self, config: Mapping[str, Any], num_llm_layers: int, attn_implementation: str = "sdpa"):
        super().__init__()
        from transformers import Qwen3Config, SiglipVisionConfig

        vision_cfg = dict(config["vision_config"])
        vision_cfg.pop("model_type", None)
        image_size = int(config.get("force_image_size") or vision_cfg["image_size"])
        vision_cfg["image_size"] = image_size
        self.vision_config = SiglipVisionConfig(**vision_cfg, vision_use_head=False)
        text_cfg = {k: v for k, v in config["text_config"].items() if k not in ("model_type", "architectures")}
        full_layers = int(text_cfg["num_hidden_layers"])
        if not 1 <= num_llm_layers <= full_layers:
            raise ValueError(f"EagleBackbone.select_layer={num_llm_layers} must be in [1, {full_layers}] "
                             f"(the LLM has {full_layers} layers)")
        text_cfg["num_hidden_layers"] = num_llm_layers  # GR00T drops every layer past select_layer
        text_cfg.pop("layer_types", None)
        self.text_config = Qwen3Config(**text_cfg)
        for cfg in (self.vision_config, self.text_config):
            cfg._attn_implementation = attn_implementation

        self.image_size, self.patch_size = image_size, int(vision_cfg["patch_size"])
        if image_size % self.patch_size:
            raise ValueError(f"Eagle image size {image_size} is not a multiple of patch size {self.patch_size}")
        self.use_pixel_shuffle = bool(config.get("use_pixel_shuffle", False))
        self.downsample_ratio = float(config.get("downsample_ratio", 0.5))
        grid = image_size // self.patch_size
        if self.use_pixel_shuffle:
            factor = round(1 / self.downsample_ratio)
            if grid % factor:
                raise ValueError(f"pixel shuffle by {self.downsample_ratio} needs the patch grid ({grid}) divisible "
                                 f"by {factor}")
            self.tokens_per_image = (grid // factor) ** 2
        else:
            self.tokens_per_image = grid * grid
        self.image_token_index = int(config["image_token_index"])
        if not 0 <= self.image_token_index < self.text_config.vocab_size:
            raise ValueError(f"image_token_index {self.image_token_index} outside the LLM vocab "
                             f"({self.text_config.vocab_size})")

        self.vision_model = _VisionTower(self.vision_config)
        vit_dim, llm_dim = self.vision_config.hidden_size, self.text_config.hidden_size
        in_dim = vit_dim * round(1 / self.downsample_ratio) ** 2 if self.use_pixel_shuffle else vit_dim
        layers = int(config.get("mlp_connector_layers", 1))
        if layers == 1:
            self.mlp1 = nn.Sequential(nn.Linear(in_dim, llm_dim))
        elif layers == 2:
            self.mlp1 = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, llm_dim), nn.GELU(),
                                      nn.Linear(llm_dim, llm_dim))
        else:
            raise ValueError(f"mlp_connector_layers must be 1 or 2, got {layers}")
        self.language_model = _LanguageModel(self.text_config)

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] -> [N, tokens_per_image, llm_hidden]."""
        vit = self.vision_model.vision_model(pixel_values=pixel_values).last_hidden_state
        if self.use_pixel_shuffle:
            side = int(vit.shape[1] ** 0.5)
            vit = pixel_shuffle(vit.reshape(vit.shape[0], side, side, -1), self.downsample_ratio)
            vit = vit.reshape(vit.shape[0], -1, vit.shape[-1])
        return self.mlp1(vit)

    def forward(self, images: torch.Tensor, lang_tokens: torch.Tensor, lang_masks: torch.Tensor) -> torch.Tensor:
        b, ncam = images.shape[:2]
        vit = self.image_features(images.flatten(0, 1))  # [B·ncam, T, D], camera-major per sample
        embeds = self.language_model.model.get_input_embeddings()(lang_tokens)
        slots = lang_tokens == self.image_token_index
        embeds = embeds.masked_scatter(slots.unsqueeze(-1), vit.to(embeds.dtype).reshape(b, -1, embeds.shape[-1]))
        out = self.language_model.model(inputs_embeds=embeds, attention_mask=lang_masks.long(), use_cache=False)
        return out.last_hidden_state


@register
class EagleBackbone(nn.Module):
    """GR00T-N1.5's VLM backbone.

    Args:
        vlm_path: Eagle config directory (its `config.json`); the guide's `.../eagle2_hg_model` resolves to
            the built-in GR00T-N1.5 config when that directory is not on this machine.
        vlm_config: overrides merged over that config (tiny test models set small widths here).
        select_layer: LLM layers kept; their last output is the feature (GR00T-N1.5: 12 of 28).
        project_to_dim: optional linear map of the features (`eagle_linear`; GR00T-N1.5: none).
        attn_implementation: transformers attention backend for SigLIP and Qwen3 ('sdpa' or 'eager').
    forward(images [B, ncam, 3, H, W], lang_tokens [B, L], lang_masks [B, L], img_masks [B, ncam])
        -> (features [B, L, output_dim], mask [B, L] bool: valid text and image tokens of present cameras).
    """

    PROJECTOR_MODULES = ("vlm.mlp1", "eagle_linear")

    def __init__(self, vlm_path: str | None = None, vlm_config: Mapping[str, Any] | None = None,
                 select_layer: int = 12, project_to_dim: int | None = None, attn_implementation: str = "sdpa"):
        super().__init__()
        self.config = resolve_eagle_config(vlm_path, vlm_config)
        self.select_layer = int(select_layer)
        self.vlm = EagleVLM(self.config, self.select_layer, attn_implementation)
        llm_dim = self.vlm.text_config.hidden_size
        self.eagle_linear = nn.Linear(llm_dim, project_to_dim) if project_to_dim else nn.Identity()
        self.output_dim = int(project_to_dim or llm_dim)
        self.tokens_per_image = self.vlm.tokens_per_image
        self.image_token_index = self.vlm.image_token_index

    def forward(self, images: torch.Tensor, lang_tokens: torch.Tensor, lang_masks: torch.Tensor | None = None,
                img_masks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(f"EagleBackbone: images must be [B, ncam, 3, H, W], got {tuple(images.shape)}")
        size = self.vlm.image_size
        if images.shape[-2:] != (size, size):
            raise ValueError(f"EagleBackbone: images are {tuple(images.shape[-2:])}, the vision tower takes "
                             f"{size}x{size} (ResizeImages height/width)")
        b, ncam = images.shape[:2]
        if lang_tokens.dim() != 2 or lang_tokens.shape[0] != b:
            raise ValueError(f"EagleBackbone: lang_tokens must be [B={b}, L], got {tuple(lang_tokens.shape)}")
        lang_masks = torch.ones_like(lang_tokens, dtype=torch.bool) if lang_masks is None else lang_masks.bool()
        slots = lang_tokens == self.image_token_index
        want = ncam * self.tokens_per_image
        counts = slots.sum(dim=1)
        if (counts != want).any():
            raise ValueError(f"EagleBackbone: lang_tokens hold {counts.tolist()} image placeholder tokens (id "
                             f"{self.image_token_index}) per sample; {ncam} cameras × {self.tokens_per_image} "
                             f"tokens_per_image = {want} expected (ProcessPromptsWithImage num_images / "
                             f"tokens_per_image)")
        feats = self.eagle_linear(self.vlm(images, lang_tokens, lang_masks))
        mask = lang_masks
        if img_masks is not None:
            # Image tokens come camera by camera: the k-th block of tokens_per_image belongs to camera k.
            cam = (slots.long().cumsum(dim=1) - 1).clamp_min(0) // self.tokens_per_image
            present = torch.gather(img_masks.bool(), 1, cam.clamp_max(ncam - 1))
            mask = mask & (~slots | present)
        return feats, mask
