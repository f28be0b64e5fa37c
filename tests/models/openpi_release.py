"""Key names and shapes of the released openpi π0 / π0.5 PyTorch checkpoints (model.safetensors), at any size.

Layout as written by openpi's `examples/convert_jax_model_to_pytorch.py` for `PI0Pytorch`
(`paligemma_with_expert.paligemma` = transformers-4.x PaliGemmaForConditionalGeneration, whose SigLIP sits
under `vision_tower.vision_model`; `paligemma_with_expert.gemma_expert` = GemmaForCausalLM with
`model.embed_tokens` removed; the flow-matching projections at the top level). LeRobot's PI0Policy adds
`model.` in front of every key, which is the form the seed's name_mapping uses. π0.5 has `time_mlp_*`
instead of `state_proj` / `action_time_mlp_*`, and adaptive RMSNorms (`*.dense`) in the expert.
Written here by hand from that layout — not derived from our modules — so a loading test can fail.
"""
from __future__ import annotations


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


def openpi_keys(vlm: dict, expert: dict, state_dim: int, action_dim: int, pi05: bool = False,
                prefix: str = "model.") -> dict[str, tuple]:
    """{key: shape} of the checkpoint for a model with these (transformers-style) dims."""
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


# The two LM heads are in the release but unused by a flow-matching policy.
UNUSED_LM_HEADS = ["model.paligemma_with_expert.gemma_expert.lm_head.weight",
                   "model.paligemma_with_expert.paligemma.lm_head.weight"]
