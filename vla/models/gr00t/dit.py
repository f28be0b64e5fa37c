"""GR00T-N1.5's transformers over action tokens: the cross-attention `DiT` (timestep-conditioned
adaptive LayerNorm) and the `SelfAttentionTransformer` that adapts the VLM features.

Module and parameter names follow the diffusers blocks NVIDIA's release is built from
(`transformer_blocks.N.norm1.linear`, `attn1.to_q`, `attn1.to_out.0`, `ff.net.0.proj`, `ff.net.2`,
`timestep_encoder.timestep_embedder.linear_1`, `proj_out_1`, ...), so a GR00T-N1.5 checkpoint loads
by name. Written on plain torch: diffusers itself is not a dependency.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def run_block(block: nn.Module, use_checkpoint: bool, *args, **kwargs) -> torch.Tensor:
    """Call `block`, recomputing its activations in backward when gradient checkpointing is on."""
    if use_checkpoint and block.training and torch.is_grad_enabled():
        return checkpoint(block, *args, use_reentrant=False, **kwargs)
    return block(*args, **kwargs)


def timestep_sinusoid(timesteps: torch.Tensor, channels: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """diffusers `Timesteps(channels, flip_sin_to_cos=True, downscale_freq_shift=1)`: [B] -> [B, channels]."""
    half = channels // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / (half - 1)
    args = timesteps.float()[:, None] * torch.exp(exponent)[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class TimestepEncoder(nn.Module):
    """Discretised flow time (0..num_timestep_buckets) -> conditioning vector [B, dim]."""

    def __init__(self, dim: int, channels: int = 256):
        super().__init__()
        self.channels = channels
        self.timestep_embedder = TimestepEmbedding(channels, dim)

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        dtype = self.timestep_embedder.linear_1.weight.dtype
        return self.timestep_embedder(timestep_sinusoid(timesteps, self.channels).to(dtype))


class AdaLayerNorm(nn.Module):
    """LayerNorm without affine, scaled and shifted by a projection of the time embedding."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.linear = nn.Linear(dim, 2 * dim)
        self.norm = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(F.silu(temb)).chunk(2, dim=-1)
        return self.norm(x) * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    """Multi-head attention with diffusers' parameter names; cross-attention when `cross_dim` is set."""

    def __init__(self, dim: int, heads: int, head_dim: int, cross_dim: int | None = None, bias: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.to_q = nn.Linear(dim, inner, bias=bias)
        self.to_k = nn.Linear(cross_dim or dim, inner, bias=bias)
        self.to_v = nn.Linear(cross_dim or dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(dropout)])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, N, dim]; context [B, S, cross_dim] (self-attention when None); key_mask [B, S] bool, True = attend."""
        context = x if context is None else context
        b, n, _ = x.shape
        q = self.to_q(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k = self.to_k(context).view(b, context.shape[1], self.heads, self.head_dim).transpose(1, 2)
        v = self.to_v(context).view(b, context.shape[1], self.heads, self.head_dim).transpose(1, 2)
        mask = None if key_mask is None else key_mask[:, None, None, :].to(torch.bool)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim)
        return self.to_out[1](self.to_out[0](out))


class GELUProj(nn.Module):
    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """diffusers FeedForward('gelu-approximate', mult=4): net = [GELU proj, Dropout, Linear, (Dropout)]."""

    def __init__(self, dim: int, dropout: float = 0.0, final_dropout: bool = False, mult: int = 4):
        super().__init__()
        inner = dim * mult
        layers: list[nn.Module] = [GELUProj(dim, inner), nn.Dropout(dropout), nn.Linear(inner, dim)]
        if final_dropout:
            layers.append(nn.Dropout(dropout))
        self.net = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class TransformerBlock(nn.Module):
    """Pre-norm attention + feed-forward. `ada_norm`: the first norm takes the time embedding (DiT);
    `layer_norm`: plain affine LayerNorms (the VL self-attention adapter)."""

    def __init__(self, dim: int, heads: int, head_dim: int, cross_dim: int | None = None, dropout: float = 0.0,
                 final_dropout: bool = False, norm_type: str = "layer_norm", norm_eps: float = 1e-5):
        super().__init__()
        if norm_type not in ("ada_norm", "layer_norm"):
            raise ValueError(f"norm_type must be 'ada_norm' or 'layer_norm', got {norm_type!r}")
        self.ada = norm_type == "ada_norm"
        self.norm1 = AdaLayerNorm(dim, eps=norm_eps) if self.ada else nn.LayerNorm(dim, eps=norm_eps)
        self.attn1 = Attention(dim, heads, head_dim, cross_dim=cross_dim, dropout=dropout)
        # The DiT's second norm has no affine parameters; the adapter's has (as in the release).
        self.norm3 = nn.LayerNorm(dim, eps=norm_eps, elementwise_affine=not self.ada)
        self.ff = FeedForward(dim, dropout=dropout, final_dropout=final_dropout)
        self.final_dropout = nn.Dropout(dropout) if final_dropout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None, context: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm1(x, temb) if self.ada else self.norm1(x)
        x = x + self.final_dropout(self.attn1(h, context=context, key_mask=key_mask))
        return x + self.ff(self.norm3(x))


class DiT(nn.Module):
    """Action-token transformer: even blocks cross-attend the VLM features, odd blocks self-attend
    (`interleave_self_attention`); every norm is conditioned on the flow time; output [B, N, output_dim]."""

    def __init__(self, num_attention_heads: int = 32, attention_head_dim: int = 48, output_dim: int = 1024,
                 num_layers: int = 16, dropout: float = 0.2, cross_attention_dim: int | None = 2048,
                 interleave_self_attention: bool = True, final_dropout: bool = True, norm_type: str = "ada_norm",
                 norm_eps: float = 1e-5, positional_embeddings: str | None = None):
        super().__init__()
        if positional_embeddings is not None:
            raise ValueError("DiT positional_embeddings other than None are not supported "
                             "(GR00T-N1.5 adds learned positions to the action tokens instead)")
        if norm_type != "ada_norm":
            raise ValueError(f"DiT norm_type must be 'ada_norm' (GR00T-N1.5), got {norm_type!r}")
        self.inner_dim = num_attention_heads * attention_head_dim
        self.interleave = bool(interleave_self_attention)
        self.gradient_checkpointing = False
        self.timestep_encoder = TimestepEncoder(self.inner_dim)
        self.transformer_blocks = nn.ModuleList([
            TransformerBlock(self.inner_dim, num_attention_heads, attention_head_dim,
                             cross_dim=None if self._self_attends(i) else cross_attention_dim,
                             dropout=dropout, final_dropout=final_dropout, norm_type="ada_norm", norm_eps=norm_eps)
            for i in range(num_layers)])
        self.norm_out = nn.LayerNorm(self.inner_dim, eps=1e-6, elementwise_affine=False)
        self.proj_out_1 = nn.Linear(self.inner_dim, 2 * self.inner_dim)
        self.proj_out_2 = nn.Linear(self.inner_dim, output_dim)

    def _self_attends(self, index: int) -> bool:
        return self.interleave and index % 2 == 1

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, timestep: torch.Tensor,
                encoder_attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        temb = self.timestep_encoder(timestep)
        x = hidden_states
        for i, block in enumerate(self.transformer_blocks):
            if self._self_attends(i):
                x = run_block(block, self.gradient_checkpointing, x, temb=temb)
            else:
                x = run_block(block, self.gradient_checkpointing, x, temb=temb, context=encoder_hidden_states,
                              key_mask=encoder_attention_mask)
        shift, scale = self.proj_out_1(F.silu(temb)).chunk(2, dim=-1)
        x = self.norm_out(x) * (1 + scale[:, None]) + shift[:, None]
        return self.proj_out_2(x)


class SelfAttentionTransformer(nn.Module):
    """The 4-block self-attention adapter GR00T-N1.5 runs over the (frozen) VLM features."""

    def __init__(self, num_attention_heads: int = 32, attention_head_dim: int = 64, num_layers: int = 4,
                 dropout: float = 0.2, final_dropout: bool = True, positional_embeddings: str | None = None):
        super().__init__()
        if positional_embeddings is not None:
            raise ValueError("SelfAttentionTransformer positional_embeddings other than None are not supported")
        self.inner_dim = num_attention_heads * attention_head_dim
        self.gradient_checkpointing = False
        self.transformer_blocks = nn.ModuleList([
            TransformerBlock(self.inner_dim, num_attention_heads, attention_head_dim, dropout=dropout,
                             final_dropout=final_dropout, norm_type="layer_norm")
            for _ in range(num_layers)])

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.transformer_blocks:
            x = run_block(block, self.gradient_checkpointing, x, key_mask=key_mask)
        return x
