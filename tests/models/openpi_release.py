"""Released openpi π0 / π0.5 PyTorch checkpoints (model.safetensors), at any size, written as their producers write them.

Names and shapes follow openpi's `PI0Pytorch` as its `examples/convert_jax_model_to_pytorch.py` fills it
(`paligemma_with_expert.paligemma` = transformers' PaliGemmaForConditionalGeneration, whose SigLIP sits under
`vision_tower.vision_model`; `paligemma_with_expert.gemma_expert` = GemmaForCausalLM with `model.embed_tokens`
set to None, its LM head kept; the flow-matching projections at the top level, at openpi's padded width
`action_dim` = 32 for both state and actions). π0.5 has `time_mlp_*` instead of `state_proj` /
`action_time_mlp_*`, and adaptive RMSNorms (`*.dense`) in the expert.

`write_release` then saves the way the producers do: a module holding these parameters, PaliGemma's LM head
tied to its token embedding (one Parameter under both names), through `safetensors.torch.save_model`, which
stores a shared tensor once. openpi's converter saves `PI0Pytorch` itself (no prefix); LeRobot's π0 policy
holds it as `self.model` (every key `model.`-prefixed). Written by hand from that layout — not derived from our
modules — so a loading test can fail.
"""
from __future__ import annotations

import torch
from torch import nn


def _siglip(prefix: str, v: dict) -> dict[str, tuple]:
    h, i, p = v["hidden_size"], v["intermediate_size"], v["patch_size"]
    keys = {f"{prefix}embeddings.patch_embedding.weight": (h, 3, p, p),
            f"{prefix}embeddings.patch_embedding.bias": (h,),
            f"{prefix}embeddings.position_embedding.weight": ((v["image_size"] // p) ** 2, h),
            f"{prefix}post_layernorm.weight": (h,), f"{prefix}post_layernorm.bias": (h,)}
    for n in range(v["num_hidden_layers"]):
        layer = f"{prefix}encoder.layers.{n}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            keys[f"{layer}self_attn.{proj}.weight"], keys[f"{layer}self_attn.{proj}.bias"] = (h, h), (h,)
        for norm in ("layer_norm1", "layer_norm2"):
            keys[f"{layer}{norm}.weight"], keys[f"{layer}{norm}.bias"] = (h,), (h,)
        keys[f"{layer}mlp.fc1.weight"], keys[f"{layer}mlp.fc1.bias"] = (i, h), (i,)
        keys[f"{layer}mlp.fc2.weight"], keys[f"{layer}mlp.fc2.bias"] = (h, i), (h,)
    return keys


def _gemma_layers(prefix: str, g: dict, adarms: bool = False) -> dict[str, tuple]:
    h, i, hd = g["hidden_size"], g["intermediate_size"], g["head_dim"]
    nh, kv = g["num_attention_heads"], g["num_key_value_heads"]
    keys = {}
    for n in range(g["num_hidden_layers"]):
        layer = f"{prefix}layers.{n}."
        keys[f"{layer}self_attn.q_proj.weight"] = (nh * hd, h)
        keys[f"{layer}self_attn.k_proj.weight"] = (kv * hd, h)
        keys[f"{layer}self_attn.v_proj.weight"] = (kv * hd, h)
        keys[f"{layer}self_attn.o_proj.weight"] = (h, nh * hd)
        keys[f"{layer}mlp.gate_proj.weight"] = (i, h)
        keys[f"{layer}mlp.up_proj.weight"] = (i, h)
        keys[f"{layer}mlp.down_proj.weight"] = (h, i)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            if adarms:
                keys[f"{layer}{norm}.dense.weight"], keys[f"{layer}{norm}.dense.bias"] = (3 * h, h), (3 * h,)
            else:
                keys[f"{layer}{norm}.weight"] = (h,)
    if adarms:
        keys[f"{prefix}norm.dense.weight"], keys[f"{prefix}norm.dense.bias"] = (3 * h, h), (3 * h,)
    else:
        keys[f"{prefix}norm.weight"] = (h,)
    return keys


def openpi_keys(vlm: dict, expert: dict, state_dim: int = 32, action_dim: int = 32, pi05: bool = False,
                prefix: str = "") -> dict[str, tuple]:
    """{key: shape} of `PI0Pytorch.state_dict()` for these (transformers-style) dims, before save_model's
    de-duplication (so both names of the tied embedding are listed). openpi pads state and actions to the
    same `action_dim` (its `state_proj` is Linear(action_dim, width))."""
    text, vision = vlm["text_config"], vlm["vision_config"]
    pg = f"{prefix}paligemma_with_expert.paligemma."
    ex = f"{prefix}paligemma_with_expert.gemma_expert."
    vocab, ht, w = text["vocab_size"], text["hidden_size"], expert["hidden_size"]
    keys = _siglip(f"{pg}model.vision_tower.vision_model.", vision)
    keys[f"{pg}model.multi_modal_projector.linear.weight"] = (vlm["projection_dim"], vision["hidden_size"])
    keys[f"{pg}model.multi_modal_projector.linear.bias"] = (vlm["projection_dim"],)
    keys[f"{pg}model.language_model.embed_tokens.weight"] = (vocab, ht)
    keys.update(_gemma_layers(f"{pg}model.language_model.", text))
    keys[f"{pg}lm_head.weight"] = (vocab, ht)
    keys.update(_gemma_layers(f"{ex}model.", expert, adarms=pi05))
    keys[f"{ex}lm_head.weight"] = (vocab, w)
    heads = {"action_in_proj": (w, action_dim), "action_out_proj": (action_dim, w)}
    if pi05:
        heads.update(time_mlp_in=(w, w), time_mlp_out=(w, w))
    else:
        heads.update(state_proj=(w, state_dim), action_time_mlp_in=(w, 2 * w), action_time_mlp_out=(w, w))
    for name, shape in heads.items():
        keys[f"{prefix}{name}.weight"], keys[f"{prefix}{name}.bias"] = shape, (shape[0],)
    return keys


TIED_LM_HEAD = "paligemma_with_expert.paligemma.lm_head.weight"
TIED_EMBED = "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
EXPERT_LM_HEAD = "paligemma_with_expert.gemma_expert.lm_head.weight"


def _module_holding(tensors: dict[str, torch.Tensor], tied: dict[str, str]) -> nn.Module:
    """An nn.Module whose state_dict() has exactly these names; each `tied` key shares its target's Parameter."""
    root = nn.Module()

    def owner(name: str) -> tuple[nn.Module, str]:
        *path, leaf = name.split(".")
        mod = root
        for part in path:
            if not hasattr(mod, part):
                mod.add_module(part, nn.Module())
            mod = getattr(mod, part)
        return mod, leaf

    for name, value in tensors.items():
        if name not in tied:
            mod, leaf = owner(name)
            mod.register_parameter(leaf, nn.Parameter(value))
    for name, target in tied.items():
        mod, leaf = owner(name)
        tmod, tleaf = owner(target)
        mod.register_parameter(leaf, getattr(tmod, tleaf))
    return root


def write_release(path, vlm: dict, expert: dict, pi05: bool = False, layout: str = "openpi", seed: int = 0,
                  action_dim: int = 32) -> dict[str, torch.Tensor]:
    """Random weights in PI0Pytorch's layout saved with `safetensors.torch.save_model` (tied LM head included).
    layout 'openpi' = the converter's output (no prefix), 'lerobot' = LeRobot's `model.`-prefixed file.
    Returns the tensors under `PI0Pytorch` names (both names of the tied embedding)."""
    from safetensors.torch import save_model

    g = torch.Generator().manual_seed(seed)
    shapes = openpi_keys(vlm, expert, action_dim, action_dim, pi05=pi05)
    tensors = {k: torch.randn(*shape, generator=g) * 0.2 for k, shape in shapes.items() if k != TIED_LM_HEAD}
    pi0 = _module_holding(tensors, {TIED_LM_HEAD: TIED_EMBED})
    tensors[TIED_LM_HEAD] = tensors[TIED_EMBED]
    if layout == "openpi":
        save_model(pi0, str(path))
    elif layout == "lerobot":
        policy = nn.Module()
        policy.add_module("model", pi0)
        save_model(policy, str(path))
    else:
        raise ValueError(f"layout must be 'openpi' or 'lerobot', got {layout!r}")
    return tensors
