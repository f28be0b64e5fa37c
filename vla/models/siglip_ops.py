"""A functional SigLIP vision forward for inference (same math as transformers' SiglipVisionModel with
`vision_use_head=False`, no position interpolation): at small widths the module/decorator dispatch of the
transformers forward is a large part of sampling time.

    SiglipInference.of(vision_model) -> SiglipInference | None   (None: a layer is wrapped, e.g. by LoRA)
    SiglipInference(pixel_values[N, 3, H, W]) -> last_hidden_state [N, tokens, width]

It reads the weights once (q/k/v stacked into one matmul); callers rebuild it when a weight changes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vla.models.gemma_ops import plain_linear


class SiglipInference:
    def __init__(self, vision_model: nn.Module):
        emb = vision_model.embeddings
        self.patch = emb.patch_embedding
        self.positions = emb.position_embedding.weight
        self.layers = []
        for layer in vision_model.encoder.layers:
            attn, mlp = layer.self_attn, layer.mlp
            w_qkv = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
            b_qkv = torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias])
            act = getattr(mlp.activation_fn, "act", mlp.activation_fn)
            self.layers.append((layer.layer_norm1, w_qkv, b_qkv, attn.num_heads, attn.head_dim, attn.scale,
                                attn.out_proj, layer.layer_norm2, mlp.fc1, act, mlp.fc2))
        self.post = vision_model.post_layernorm

    @classmethod
    def of(cls, vision_model: nn.Module) -> "SiglipInference | None":
        for layer in vision_model.encoder.layers:
            a, m = layer.self_attn, layer.mlp
            if not all(plain_linear(x) for x in (a.q_proj, a.k_proj, a.v_proj, a.out_proj, m.fc1, m.fc2)):
                return None
            if any(x.bias is None for x in (a.q_proj, a.k_proj, a.v_proj)):
                return None
        return cls(vision_model)

    @staticmethod
    def _ln(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        w = self.patch.weight
        x = F.conv2d(pixel_values.to(w.dtype), w, self.patch.bias, stride=self.patch.stride)
        x = x.flatten(2).transpose(1, 2)
        if x.shape[1] != self.positions.shape[0]:
            raise ValueError(f"SigLIP expects {self.positions.shape[0]} patches per image, got {x.shape[1]}: "
                             "resize the images to the vision_config image_size")
        x = x + self.positions
        n, t, d = x.shape
        for ln1, w_qkv, b_qkv, heads, hd, scale, out_proj, ln2, fc1, act, fc2 in self.layers:
            q, k, v = F.linear(self._ln(ln1, x), w_qkv, b_qkv).view(n, t, 3, heads, hd).permute(2, 0, 3, 1, 4)
            attn = F.scaled_dot_product_attention(q, k, v, scale=scale).transpose(1, 2).reshape(n, t, heads * hd)
            x = x + F.linear(attn, out_proj.weight, out_proj.bias)
            x = x + F.linear(act(F.linear(self._ln(ln2, x), fc1.weight, fc1.bias)), fc2.weight, fc2.bias)
        return self._ln(self.post, x)
