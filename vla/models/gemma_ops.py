"""Per-layer operations of a Gemma decoder layer, as the π0 / π0.5 loops use them.

    layer_ops(layer, fast: bool) -> ModuleOps | FastOps | FusedOps
        ModuleOps calls the layer's modules (autograd, FSDP hooks, peft LoRA wrappers all apply).
        FastOps reads the layer's tensors once and applies functional ops: at small widths nn.Module
        dispatch is most of a denoising step's time. Only for plain nn.Linear projections (no LoRA wrapper,
        no FSDP-sharded parameters); `layer_ops` falls back to ModuleOps otherwise.
        FusedOps (small layers only, <= FUSE_MAX_ELEMENTS weights) also stacks [Wq; R·Wq; Wk; R·Wk; Wv]
        (R = rotate_half on each head's rows) and [W_gate; W_up] into one matmul each, so RoPE is two
        multiplies and an add; it copies those weights, which is why big layers use FastOps.
    Both: norm1(h, cond) / norm2(h, cond) -> (x, gate); qkv(x, cos, sin); kv(x, cos, sin); o(out); mlp(x)
    rms(norm_module, h, cond) -> (x, gate)   — the stack's final norm, same rules.

`cond` is π0.5's adaRMS conditioning (None for plain RMSNorm); `gate` multiplies the residual branch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding as transformers' Gemma; x [B, H, T, D], cos/sin [B, 1, T, D]."""
    return x * cos + rotate_half(x) * sin


def residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    return x + y if gate is None else x + y * gate


def _split_heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    return x.view(*x.shape[:-1], -1, head_dim).transpose(1, 2)


def module_norm(module: nn.Module, h: torch.Tensor, cond: torch.Tensor | None):
    if cond is None:
        return module(h), None
    return module(h, cond)


class ModuleOps:
    def __init__(self, layer: nn.Module):
        self.layer = layer
        self.head_dim = layer.self_attn.head_dim
        self.scaling = layer.self_attn.scaling

    def norm1(self, h, cond):
        return module_norm(self.layer.input_layernorm, h, cond)

    def norm2(self, h, cond):
        return module_norm(self.layer.post_attention_layernorm, h, cond)

    def qkv(self, x, cos, sin):
        attn = self.layer.self_attn
        q, k, v = (_split_heads(p(x), self.head_dim) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        return rope(q, cos, sin), rope(k, cos, sin), v

    def kv(self, x, cos, sin):
        attn = self.layer.self_attn
        return rope(_split_heads(attn.k_proj(x), self.head_dim), cos, sin), _split_heads(attn.v_proj(x), self.head_dim)

    def o(self, out):
        return self.layer.self_attn.o_proj(out)

    def mlp(self, x):
        return self.layer.mlp(x)


def plain_linear(m: nn.Module) -> bool:
    """A bare nn.Linear with an ordinary Parameter weight (no LoRA wrapper, no FSDP-sharded tensor)."""
    return type(m) is nn.Linear and type(m.weight) is nn.Parameter


class _FastNorm:
    """GemmaRMSNorm (x·rms⁻¹·(1+w)) or π0.5's AdaRMSNorm (dense(cond) -> scale, shift, gate)."""

    def __init__(self, module: nn.Module):
        self.eps = module.eps
        self.dense = getattr(module, "dense", None)
        if self.dense is not None:
            self.w, self.b = self.dense.weight, self.dense.bias
        else:
            self.scale = 1.0 + module.weight.float()

    def __call__(self, h, cond):
        hf = h.float()
        if self.dense is None:
            return F.rms_norm(hf, (hf.shape[-1],), self.scale, self.eps).to(h.dtype), None
        normed = F.rms_norm(hf, (hf.shape[-1],), None, self.eps)
        scale, shift, gate = F.linear(cond.to(self.w.dtype), self.w, self.b)[:, None, :].chunk(3, dim=-1)
        return (normed * (1 + scale.float()) + shift.float()).to(h.dtype), gate.to(h.dtype)


def fast_norm_ok(module: nn.Module) -> bool:
    dense = getattr(module, "dense", None)
    return plain_linear(dense) if dense is not None else type(getattr(module, "weight", None)) is nn.Parameter


class FastOps:
    def __init__(self, layer: nn.Module):
        attn, mlp = layer.self_attn, layer.mlp
        self.head_dim, self.scaling = attn.head_dim, attn.scaling
        self.wq, self.wk, self.wv, self.wo = (attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight,
                                              attn.o_proj.weight)
        self.bq, self.bk, self.bv, self.bo = attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias, attn.o_proj.bias
        self.w_gate, self.w_up, self.w_down = mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight
        self.act = getattr(mlp.act_fn, "act", mlp.act_fn)  # transformers' GELUTanh wraps F.gelu(approximate='tanh')
        self.norm1, self.norm2 = _FastNorm(layer.input_layernorm), _FastNorm(layer.post_attention_layernorm)

    def qkv(self, x, cos, sin):
        q = _split_heads(F.linear(x, self.wq, self.bq), self.head_dim)
        k, v = self.kv(x, cos, sin)
        return rope(q, cos, sin), k, v

    def kv(self, x, cos, sin):
        k = _split_heads(F.linear(x, self.wk, self.bk), self.head_dim)
        return rope(k, cos, sin), _split_heads(F.linear(x, self.wv, self.bv), self.head_dim)

    def o(self, out):
        return F.linear(out, self.wo, self.bo)

    def mlp(self, x):
        return F.linear(self.act(F.linear(x, self.w_gate)) * F.linear(x, self.w_up), self.w_down)


def fast_ok(layer: nn.Module) -> bool:
    attn, mlp = layer.self_attn, layer.mlp
    linears = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)
    return (all(plain_linear(m) for m in linears) and mlp.gate_proj.bias is None and mlp.up_proj.bias is None
            and mlp.down_proj.bias is None and fast_norm_ok(layer.input_layernorm)
            and fast_norm_ok(layer.post_attention_layernorm))


FUSE_MAX_ELEMENTS = 1 << 20


def _rotated_rows(w: torch.Tensor, head_dim: int) -> torch.Tensor:
    """R·W with R = rotate_half applied to each head's block of output rows: (R·W)x = rotate_half(Wx)."""
    w = w.view(-1, head_dim, w.shape[-1])
    half = head_dim // 2
    return torch.cat([-w[:, half:], w[:, :half]], dim=1).reshape(-1, w.shape[-1])


class FusedOps(FastOps):
    def __init__(self, layer: nn.Module):
        super().__init__(layer)
        hd = self.head_dim
        self.w_qkv = torch.cat([self.wq, _rotated_rows(self.wq, hd), self.wk, _rotated_rows(self.wk, hd), self.wv])
        nq, nk = self.wq.shape[0], self.wk.shape[0]
        self.splits = [nq, nq, nk, nk, self.wv.shape[0]]
        self.w_gu = torch.cat([self.w_gate, self.w_up])
        self.inter = self.w_gate.shape[0]

    def qkv(self, x, cos, sin):
        q, qr, k, kr, v = F.linear(x, self.w_qkv).split(self.splits, dim=-1)
        hd = self.head_dim
        q = _split_heads(q, hd) * cos + _split_heads(qr, hd) * sin
        k = _split_heads(k, hd) * cos + _split_heads(kr, hd) * sin
        return q, k, _split_heads(v, hd)

    def mlp(self, x):
        gate, up = F.linear(x, self.w_gu).split(self.inter, dim=-1)
        return F.linear(self.act(gate) * up, self.w_down)


def _fusable(layer: nn.Module) -> bool:
    attn, mlp = layer.self_attn, layer.mlp
    size = sum(m.weight.numel() for m in (attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj))
    return size <= FUSE_MAX_ELEMENTS and all(m.bias is None for m in (attn.q_proj, attn.k_proj, attn.v_proj))


def layer_ops(layer: nn.Module, fast: bool = True):
    if not (fast and fast_ok(layer)):
        return ModuleOps(layer)
    return FusedOps(layer) if _fusable(layer) else FastOps(layer)


def final_norm(module: nn.Module, fast: bool = True):
    """A callable (h, cond) -> (x, gate) for a stack's final norm."""
    if fast and fast_norm_ok(module):
        return _FastNorm(module)
    return lambda h, cond: module_norm(module, h, cond)
