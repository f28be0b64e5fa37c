"""The two transformer stacks of π0 / π0.5, built from transformers modules at any size.

    PaliGemma(vlm_backbone_id='paligemma_3b_pt_224', vlm_config=None)
        .vlm.model = transformers PaliGemmaModel (vision_tower = SigLIP, multi_modal_projector,
        language_model = Gemma). `vlm_config` overrides the preset: keys of PaliGemmaConfig, with
        `text_config` / `vision_config` dicts merged key by key.
        embed_images(images[B*n,3,H,W]) -> [B*n, tokens, width];  embed_tokens(ids) -> [B, L, width]
        (Gemma's embedding is scaled by sqrt(width) inside transformers, as in openpi).
    GemmaLLMBackbone(llm_backbone_id='gemma_300m', llm_family='gemma', llm_config=None)
        .llm.model = transformers GemmaModel without its token embedding (the action expert only
        receives embeddings, as openpi's `gemma_expert.model.embed_tokens = None`).

Attribute paths (`vlm.model.language_model`, `llm.model`) are the ones the configs' name_mapping names.
Presets follow openpi `models/gemma.py` (gemma_2b, gemma_300m) and PaliGemma-3B-pt-224.
"""
from __future__ import annotations

import copy
from typing import Any

from torch import nn

from vla.config import register

# openpi models/gemma.py: gemma_2b (PaliGemma's LM) and gemma_300m (the action expert, "311M params").
GEMMA_PRESETS: dict[str, dict[str, Any]] = {
    "gemma_2b": dict(hidden_size=2048, intermediate_size=16384, num_attention_heads=8, num_key_value_heads=1,
                     head_dim=256, num_hidden_layers=18, vocab_size=257152),
    "gemma_300m": dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=8, num_key_value_heads=1,
                       head_dim=256, num_hidden_layers=18, vocab_size=257152),
}
GEMMA_PRESETS["gemma-2b_causal"] = GEMMA_PRESETS["gemma_2b"]  # FluxVLA's id for the same architecture

PALIGEMMA_PRESETS: dict[str, dict[str, Any]] = {
    "paligemma_3b_pt_224": dict(
        text_config=dict(model_type="gemma", **GEMMA_PRESETS["gemma_2b"]),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304,
                           num_hidden_layers=27, num_attention_heads=16, patch_size=14, image_size=224,
                           vision_use_head=False),
        projection_dim=2048, image_token_id=257152),
}


def _merge(base: dict, override: dict | None) -> dict:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _preset(table: dict, key: str, what: str) -> dict:
    if key not in table:
        raise ValueError(f"unknown {what} {key!r}; known: {sorted(table)}")
    return table[key]


def paligemma_config(vlm_backbone_id: str, vlm_config: dict | None = None):
    from transformers import PaliGemmaConfig

    spec = _merge(_preset(PALIGEMMA_PRESETS, vlm_backbone_id, "vlm_backbone_id"), vlm_config)
    spec.setdefault("text_config", {}).setdefault("model_type", "gemma")
    spec.setdefault("vision_config", {}).setdefault("model_type", "siglip_vision_model")
    # π0 attends bidirectionally over the whole image + prompt prefix.
    spec["text_config"]["use_bidirectional_attention"] = True
    spec["vision_config"].setdefault("projection_dim", spec.get("projection_dim", spec["text_config"]["hidden_size"]))
    spec.setdefault("projection_dim", spec["text_config"]["hidden_size"])
    return PaliGemmaConfig(**spec)


def gemma_config(llm_backbone_id: str, llm_config: dict | None = None):
    from transformers import GemmaConfig

    spec = _merge(_preset(GEMMA_PRESETS, llm_backbone_id, "llm_backbone_id"), llm_config)
    spec.pop("model_type", None)
    spec["use_bidirectional_attention"] = True
    return GemmaConfig(**spec)


class _Holder(nn.Module):
    """A plain container so parameter names read `<holder>.model.<...>` like the HF wrappers."""


class _SiglipTower(nn.Module):
    """Keeps SigLIP under `.vision_model`, the key layout of openpi / transformers 4.x checkpoints
    (`vision_tower.vision_model.encoder...`); transformers 5 flattened that level away."""

    def __init__(self, siglip: nn.Module):
        super().__init__()
        self.vision_model = siglip

    def forward(self, pixel_values, **kwargs):
        return self.vision_model(pixel_values, **kwargs)


@register
class PaliGemma(nn.Module):
    def __init__(self, vlm_backbone_id: str = "paligemma_3b_pt_224", vlm_config: dict | None = None):
        super().__init__()
        from transformers import PaliGemmaModel

        self.config = paligemma_config(vlm_backbone_id, vlm_config)
        self.vlm = _Holder()
        self.vlm.model = PaliGemmaModel(self.config)
        self.vlm.model.vision_tower = _SiglipTower(self.vlm.model.vision_tower)
        self.width = self.config.text_config.hidden_size

    @property
    def language_model(self):
        return self.vlm.model.language_model

    def embed_images(self, pixel_values):
        return self.vlm.model.get_image_features(pixel_values).pooler_output

    def embed_tokens(self, input_ids):
        return self.vlm.model.language_model.embed_tokens(input_ids)


@register
class GemmaLLMBackbone(nn.Module):
    def __init__(self, llm_backbone_id: str = "gemma_300m", llm_family: str = "gemma",
                 llm_config: dict | None = None):
        super().__init__()
        from transformers import GemmaModel

        if llm_family != "gemma":
            raise ValueError(f"GemmaLLMBackbone supports llm_family='gemma', got {llm_family!r}")
        self.config = gemma_config(llm_backbone_id, llm_config)
        small = copy.deepcopy(self.config)
        small.vocab_size = 1  # the expert never embeds tokens: don't allocate a vocab-sized table
        self.llm = _Holder()
        self.llm.model = GemmaModel(small)
        self.llm.model.embed_tokens = None
        self.width = self.config.hidden_size

    @property
    def language_model(self):
        return self.llm.model
