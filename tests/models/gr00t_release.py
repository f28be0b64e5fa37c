"""The tensor names and shapes of a released GR00T-N1.5 checkpoint (nvidia/GR00T-N1.5-3B), written
from the release's module tree (Isaac-GR00T n1.5-release: GR00T_N1_5 = `backbone` EagleBackbone
(`eagle_model` = Eagle2_5_VLForConditionalGeneration: `vision_model` SiglipVisionModel, `mlp1`,
`language_model` Qwen3ForCausalLM cut to `select_layer` layers) + `action_head`
FlowmatchingActionHead (diffusers-block DiT, SelfAttentionTransformer, category-specific MLPs)).

Independent of vla.models on purpose: the tests load these names through the guide's name_mapping.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ReleaseDims:
    # Eagle 2.5 (SigLIP so400m/14 @224, no pixel shuffle, 1-layer projector, Qwen3-1.7B cut to 12 layers)
    vit_width: int = 1152
    vit_mlp: int = 4304
    vit_layers: int = 27
    patch: int = 14
    image: int = 224
    projector_in: int = 1152          # vit_width, × 4 with pixel shuffle
    llm_width: int = 2048
    llm_mlp: int = 6144
    llm_layers: int = 12
    llm_heads: int = 16
    llm_kv_heads: int = 8
    llm_head_dim: int = 128
    vocab: int = 151680
    # action head (config.json action_head_cfg)
    max_state_dim: int = 64
    max_action_dim: int = 32
    hidden_size: int = 1024
    input_embedding_dim: int = 1536
    embodiments: int = 32
    dit_layers: int = 16
    vl_layers: int = 4
    vl_width: int = 2048              # 32 heads × 64
    future_tokens: int = 32
    max_seq_len: int = 1024


def _linear(out: dict, name: str, fan_in: int, fan_out: int, bias: bool = True) -> None:
    out[f"{name}.weight"] = (fan_out, fan_in)
    if bias:
        out[f"{name}.bias"] = (fan_out,)


def _norm(out: dict, name: str, width: int, bias: bool = True) -> None:
    out[f"{name}.weight"] = (width,)
    if bias:
        out[f"{name}.bias"] = (width,)


def release_shapes(d: ReleaseDims = ReleaseDims()) -> dict[str, tuple[int, ...]]:
    s: dict[str, tuple[int, ...]] = {}
    v = "backbone.eagle_model.vision_model.vision_model"
    s[f"{v}.embeddings.patch_embedding.weight"] = (d.vit_width, 3, d.patch, d.patch)
    s[f"{v}.embeddings.patch_embedding.bias"] = (d.vit_width,)
    s[f"{v}.embeddings.position_embedding.weight"] = ((d.image // d.patch) ** 2, d.vit_width)
    for i in range(d.vit_layers):
        p = f"{v}.encoder.layers.{i}"
        _norm(s, f"{p}.layer_norm1", d.vit_width)
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            _linear(s, f"{p}.self_attn.{proj}", d.vit_width, d.vit_width)
        _norm(s, f"{p}.layer_norm2", d.vit_width)
        _linear(s, f"{p}.mlp.fc1", d.vit_width, d.vit_mlp)
        _linear(s, f"{p}.mlp.fc2", d.vit_mlp, d.vit_width)
    _norm(s, f"{v}.post_layernorm", d.vit_width)
    # SigLIP's attention-pooling head: released, never run by GR00T.
    s[f"{v}.head.probe"] = (1, 1, d.vit_width)
    s[f"{v}.head.attention.in_proj_weight"] = (3 * d.vit_width, d.vit_width)
    s[f"{v}.head.attention.in_proj_bias"] = (3 * d.vit_width,)
    _linear(s, f"{v}.head.attention.out_proj", d.vit_width, d.vit_width)
    _norm(s, f"{v}.head.layernorm", d.vit_width)
    _linear(s, f"{v}.head.mlp.fc1", d.vit_width, d.vit_mlp)
    _linear(s, f"{v}.head.mlp.fc2", d.vit_mlp, d.vit_width)

    _linear(s, "backbone.eagle_model.mlp1.0", d.projector_in, d.llm_width)

    lm = "backbone.eagle_model.language_model"
    s[f"{lm}.model.embed_tokens.weight"] = (d.vocab, d.llm_width)
    q, kv = d.llm_heads * d.llm_head_dim, d.llm_kv_heads * d.llm_head_dim
    for i in range(d.llm_layers):
        p = f"{lm}.model.layers.{i}"
        _linear(s, f"{p}.self_attn.q_proj", d.llm_width, q, bias=False)
        _linear(s, f"{p}.self_attn.k_proj", d.llm_width, kv, bias=False)
        _linear(s, f"{p}.self_attn.v_proj", d.llm_width, kv, bias=False)
        _linear(s, f"{p}.self_attn.o_proj", q, d.llm_width, bias=False)
        _norm(s, f"{p}.self_attn.q_norm", d.llm_head_dim, bias=False)
        _norm(s, f"{p}.self_attn.k_norm", d.llm_head_dim, bias=False)
        _linear(s, f"{p}.mlp.gate_proj", d.llm_width, d.llm_mlp, bias=False)
        _linear(s, f"{p}.mlp.up_proj", d.llm_width, d.llm_mlp, bias=False)
        _linear(s, f"{p}.mlp.down_proj", d.llm_mlp, d.llm_width, bias=False)
        _norm(s, f"{p}.input_layernorm", d.llm_width, bias=False)
        _norm(s, f"{p}.post_attention_layernorm", d.llm_width, bias=False)
    _norm(s, f"{lm}.model.norm", d.llm_width, bias=False)
    s[f"{lm}.lm_head.weight"] = (d.vocab, d.llm_width)  # released, never run by GR00T

    h, w, e = "action_head", d.input_embedding_dim, d.embodiments
    m = f"{h}.model"
    _linear(s, f"{m}.timestep_encoder.timestep_embedder.linear_1", 256, w)
    _linear(s, f"{m}.timestep_encoder.timestep_embedder.linear_2", w, w)
    for i in range(d.dit_layers):
        p = f"{m}.transformer_blocks.{i}"
        ctx = w if i % 2 == 1 else d.llm_width  # odd blocks self-attend (interleave_self_attention)
        _linear(s, f"{p}.norm1.linear", w, 2 * w)
        _linear(s, f"{p}.attn1.to_q", w, w)
        _linear(s, f"{p}.attn1.to_k", ctx, w)
        _linear(s, f"{p}.attn1.to_v", ctx, w)
        _linear(s, f"{p}.attn1.to_out.0", w, w)
        _linear(s, f"{p}.ff.net.0.proj", w, 4 * w)
        _linear(s, f"{p}.ff.net.2", 4 * w, w)
    _linear(s, f"{m}.proj_out_1", w, 2 * w)
    _linear(s, f"{m}.proj_out_2", w, d.hidden_size)
    for i in range(d.vl_layers):
        p = f"{h}.vl_self_attention.transformer_blocks.{i}"
        _norm(s, f"{p}.norm1", d.vl_width)
        for proj in ("to_q", "to_k", "to_v", "to_out.0"):
            _linear(s, f"{p}.attn1.{proj}", d.vl_width, d.vl_width)
        _norm(s, f"{p}.norm3", d.vl_width)
        _linear(s, f"{p}.ff.net.0.proj", d.vl_width, 4 * d.vl_width)
        _linear(s, f"{p}.ff.net.2", 4 * d.vl_width, d.vl_width)
    _norm(s, f"{h}.vlln", d.llm_width)

    def cat_linear(name: str, fan_in: int, fan_out: int) -> None:
        s[f"{name}.W"] = (e, fan_in, fan_out)
        s[f"{name}.b"] = (e, fan_out)

    cat_linear(f"{h}.state_encoder.layer1", d.max_state_dim, d.hidden_size)
    cat_linear(f"{h}.state_encoder.layer2", d.hidden_size, w)
    cat_linear(f"{h}.action_encoder.W1", d.max_action_dim, w)
    cat_linear(f"{h}.action_encoder.W2", 2 * w, w)
    cat_linear(f"{h}.action_encoder.W3", w, w)
    cat_linear(f"{h}.action_decoder.layer1", d.hidden_size, d.hidden_size)
    cat_linear(f"{h}.action_decoder.layer2", d.hidden_size, d.max_action_dim)
    s[f"{h}.future_tokens.weight"] = (d.future_tokens, w)
    s[f"{h}.position_embedding.weight"] = (d.max_seq_len, w)
    return s


def release_tensors(d: ReleaseDims, device: str = "cpu", seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in release_shapes(d).items():
        if device == "meta":
            out[name] = torch.empty(shape, device="meta")
        else:
            out[name] = torch.randn(shape, generator=g) * 0.05
    return out
