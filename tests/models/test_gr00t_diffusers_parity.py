"""Our DiT against one assembled from the diffusers blocks GR00T-N1.5's release is built from
(`Attention`, `FeedForward('gelu-approximate')`, `Timesteps(256, flip_sin_to_cos=True,
downscale_freq_shift=1)`, `TimestepEmbedding`), wired as the release wires them: same state-dict
names (loaded strictly) and same outputs. Skipped where diffusers is not installed (it is not a
dependency of this project; `pip install diffusers` to run it).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

diffusers = pytest.importorskip("diffusers")
from diffusers.models.attention import FeedForward  # noqa: E402
from diffusers.models.attention_processor import Attention  # noqa: E402
from diffusers.models.embeddings import TimestepEmbedding, Timesteps  # noqa: E402

from vla.models.gr00t.dit import DiT, SelfAttentionTransformer  # noqa: E402


class RefAdaLayerNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.linear = nn.Linear(dim, 2 * dim)
        self.norm = nn.LayerNorm(dim, 1e-5, False)

    def forward(self, x, temb):
        scale, shift = self.linear(F.silu(temb)).chunk(2, dim=1)
        return self.norm(x) * (1 + scale[:, None]) + shift[:, None]


class RefBlock(nn.Module):
    """The release's BasicTransformerBlock (norm1 -> attn1 -> final dropout -> residual; norm3 -> ff -> residual)."""

    def __init__(self, dim, heads, head_dim, cross_dim, ada):
        super().__init__()
        self.ada = ada
        self.norm1 = RefAdaLayerNorm(dim) if ada else nn.LayerNorm(dim, eps=1e-5)
        self.attn1 = Attention(query_dim=dim, heads=heads, dim_head=head_dim, dropout=0.2, bias=True,
                               cross_attention_dim=cross_dim, out_bias=True)
        self.norm3 = nn.LayerNorm(dim, 1e-5, not ada)
        self.ff = FeedForward(dim, dropout=0.2, activation_fn="gelu-approximate", final_dropout=True, bias=True)
        self.final_dropout = nn.Dropout(0.2)

    def forward(self, x, temb=None, context=None):
        h = self.norm1(x, temb) if self.ada else self.norm1(x)
        x = self.final_dropout(self.attn1(h, encoder_hidden_states=context)) + x
        return self.ff(self.norm3(x)) + x


class RefTimestepEncoder(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.time_proj = Timesteps(num_channels=256, flip_sin_to_cos=True, downscale_freq_shift=1)
        self.timestep_embedder = TimestepEmbedding(in_channels=256, time_embed_dim=dim)

    def forward(self, t):
        return self.timestep_embedder(self.time_proj(t))


class RefDiT(nn.Module):
    def __init__(self, heads, head_dim, out_dim, layers, cross_dim):
        super().__init__()
        dim = heads * head_dim
        self.timestep_encoder = RefTimestepEncoder(dim)
        self.transformer_blocks = nn.ModuleList(
            RefBlock(dim, heads, head_dim, None if i % 2 == 1 else cross_dim, ada=True) for i in range(layers))
        self.norm_out = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.proj_out_1 = nn.Linear(dim, 2 * dim)
        self.proj_out_2 = nn.Linear(dim, out_dim)

    def forward(self, x, context, t):
        temb = self.timestep_encoder(t)
        for i, block in enumerate(self.transformer_blocks):
            x = block(x, temb, None if i % 2 == 1 else context)
        shift, scale = self.proj_out_1(F.silu(temb)).chunk(2, dim=1)
        return self.proj_out_2(self.norm_out(x) * (1 + scale[:, None]) + shift[:, None])


def _randomise(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_dit_matches_the_diffusers_assembly():
    ours = DiT(num_attention_heads=4, attention_head_dim=8, output_dim=24, num_layers=4, cross_attention_dim=40).eval()
    ref = RefDiT(heads=4, head_dim=8, out_dim=24, layers=4, cross_dim=40).eval()
    _randomise(ours, 0)
    ref.load_state_dict(ours.state_dict(), strict=True)  # same names, same shapes
    x, ctx = torch.randn(3, 7, 32), torch.randn(3, 11, 40)
    t = torch.tensor([0, 250, 999])
    torch.testing.assert_close(ours(x, ctx, t), ref(x, ctx, t), rtol=1e-5, atol=1e-5)


def test_self_attention_adapter_matches_the_diffusers_assembly():
    ours = SelfAttentionTransformer(num_attention_heads=4, attention_head_dim=8, num_layers=2).eval()
    ref = nn.Module()
    ref.transformer_blocks = nn.ModuleList(RefBlock(32, 4, 8, None, ada=False) for _ in range(2))
    ref.eval()
    _randomise(ours, 1)
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 9, 32)
    want = x
    for block in ref.transformer_blocks:
        want = block(want)
    torch.testing.assert_close(ours(x), want, rtol=1e-5, atol=1e-5)
