"""`FlowMatchingHead`: GR00T-N1.5's action head.

Embodiment-conditioned encoders (one weight set per `embodiment_id`, LIBERO is 31) map the state and
the noised action chunk to tokens; a `DiT` over [state, future tokens, action tokens] cross-attends
the VLM features (after a LayerNorm and a self-attention adapter) and predicts the flow velocity.

Flow convention (GR00T's): x_t = (1 - t)·noise + t·action, target velocity = action - noise,
t = (s - u)/s with u ~ Beta(1.5, 1.0), s = 0.999 (more weight near the noise end). Sampling integrates
x from t = 0 (noise) to t = 1 with `num_inference_timesteps` Euler steps. Times enter the networks
discretised into `num_timestep_buckets` buckets.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from vla.config import register
from vla.models.gr00t.dit import DiT, SelfAttentionTransformer

# The released GR00T-N1.5-3B action head (its config.json `action_head_cfg`).
GR00T_N15_DIT = dict(num_attention_heads=32, attention_head_dim=48, output_dim=1024, num_layers=16, dropout=0.2,
                     cross_attention_dim=2048, interleave_self_attention=True, final_dropout=True,
                     norm_type="ada_norm", positional_embeddings=None)
GR00T_N15_VL_SELF_ATTENTION = dict(num_attention_heads=32, attention_head_dim=64, num_layers=4, dropout=0.2,
                                   final_dropout=True, positional_embeddings=None)


class CategorySpecificLinear(nn.Module):
    """A linear layer with one weight matrix per category: y = x @ W[id] + b[id]."""

    def __init__(self, num_categories: int, input_dim: int, output_dim: int):
        super().__init__()
        self.num_categories = num_categories
        self.W = nn.Parameter(0.02 * torch.randn(num_categories, input_dim, output_dim))
        self.b = nn.Parameter(torch.zeros(num_categories, output_dim))

    def forward(self, x: torch.Tensor, cat_ids: torch.Tensor) -> torch.Tensor:
        return torch.bmm(x, self.W[cat_ids]) + self.b[cat_ids].unsqueeze(1)


class CategorySpecificMLP(nn.Module):
    def __init__(self, num_categories: int, input_dim: int, hidden_dim: int, output_dim: int):
        super().__init__()
        self.layer1 = CategorySpecificLinear(num_categories, input_dim, hidden_dim)
        self.layer2 = CategorySpecificLinear(num_categories, hidden_dim, output_dim)

    def forward(self, x: torch.Tensor, cat_ids: torch.Tensor) -> torch.Tensor:
        return self.layer2(F.relu(self.layer1(x, cat_ids)), cat_ids)


def sinusoidal_encoding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """[B, T] discretised times -> [B, T, dim] (sin | cos), as GR00T's action encoder."""
    half = dim // 2
    freqs = torch.exp(-torch.arange(half, dtype=torch.float32, device=timesteps.device)
                      * (torch.log(torch.tensor(10000.0)) / half))
    args = timesteps.float().unsqueeze(-1) * freqs
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class MultiEmbodimentActionEncoder(nn.Module):
    """(noised actions, flow time, embodiment) -> action tokens: W3(swish(W2([W1·a, sinusoid(t)])))."""

    def __init__(self, action_dim: int, hidden_size: int, num_embodiments: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.W1 = CategorySpecificLinear(num_embodiments, action_dim, hidden_size)
        self.W2 = CategorySpecificLinear(num_embodiments, 2 * hidden_size, hidden_size)
        self.W3 = CategorySpecificLinear(num_embodiments, hidden_size, hidden_size)

    def forward(self, actions: torch.Tensor, timesteps: torch.Tensor, cat_ids: torch.Tensor) -> torch.Tensor:
        a = self.W1(actions, cat_ids)
        tau = sinusoidal_encoding(timesteps[:, None].expand(-1, actions.shape[1]), self.hidden_size).to(a.dtype)
        return self.W3(F.silu(self.W2(torch.cat([a, tau], dim=-1), cat_ids)), cat_ids)


@register
class FlowMatchingHead(nn.Module):
    """GR00T-N1.5 flow-matching action head.

    Args (FluxVLA's names):
        state_dim: proprio width the state encoder reads (LIBERO 8).
        hidden_size: width of the state-encoder hidden layer, the DiT output and the action decoder (1024).
        input_embedding_dim: width of the state/action tokens the DiT runs on (1536 = DiT heads × head dim).
        action_dim: action width predicted (LIBERO 7).
        num_inference_timesteps: Euler steps in `predict_action` (4).
        traj_length: actions per chunk (10 for LIBERO).
        num_layers, num_heads: accepted as FluxVLA's config writes them. As in FluxVLA's FlowMatchingHead they do
            not size the network: the DiT is `diffusion_model_cfg` (default: the released 16 blocks ×
            32 heads), so the guide's config loads the GR00T-N1.5-3B checkpoint unchanged.
    The rest default to the GR00T-N1.5-3B release: `max_num_embodiments` 32, `backbone_embedding_dim`
    2048 (the VLM feature width), `num_target_vision_tokens` 32 learned "future" tokens, learned
    positions for up to `max_seq_len` action tokens, Beta(1.5, 1.0) time sampling with s = 0.999.
    `mask_padding`: padded VLM tokens get no attention (the release attends to them; masking makes a
    sample's prediction independent of how far its batch is padded).
    """

    def __init__(self, state_dim: int, hidden_size: int, input_embedding_dim: int, action_dim: int,
                 num_inference_timesteps: int, traj_length: int, num_layers: int | None = None,
                 num_heads: int | None = None, max_num_embodiments: int = 32, backbone_embedding_dim: int = 2048,
                 use_vlln: bool = True, vl_self_attention_cfg: Mapping[str, Any] | None = None,
                 diffusion_model_cfg: Mapping[str, Any] | None = None, num_target_vision_tokens: int = 32,
                 add_positional_embeddings: bool = True, max_seq_len: int = 1024, num_timestep_buckets: int = 1000,
                 noise_s: float = 0.999, noise_beta_alpha: float = 1.5, noise_beta_beta: float = 1.0,
                 mask_padding: bool = True, max_state_dim: int | None = None, max_action_dim: int | None = None):
        super().__init__()
        for name, value in dict(state_dim=state_dim, hidden_size=hidden_size, input_embedding_dim=input_embedding_dim,
                                action_dim=action_dim, num_inference_timesteps=num_inference_timesteps,
                                traj_length=traj_length, max_num_embodiments=max_num_embodiments).items():
            if int(value) <= 0:
                raise ValueError(f"FlowMatchingHead.{name} must be positive, got {value}")
        if traj_length > max_seq_len:
            raise ValueError(f"FlowMatchingHead.traj_length={traj_length} exceeds max_seq_len={max_seq_len}")
        dit_cfg = {**GR00T_N15_DIT, **dict(diffusion_model_cfg or {})}
        vl_cfg = {**GR00T_N15_VL_SELF_ATTENTION, **dict(vl_self_attention_cfg or {})}
        dit_width = dit_cfg["num_attention_heads"] * dit_cfg["attention_head_dim"]
        if dit_width != input_embedding_dim:
            raise ValueError(f"FlowMatchingHead: DiT width num_attention_heads×attention_head_dim = {dit_width} "
                             f"must equal input_embedding_dim={input_embedding_dim}")
        if dit_cfg["output_dim"] != hidden_size:
            raise ValueError(f"FlowMatchingHead: diffusion_model_cfg.output_dim={dit_cfg['output_dim']} must equal "
                             f"hidden_size={hidden_size} (the action decoder reads it)")
        if dit_cfg.get("cross_attention_dim") not in (None, backbone_embedding_dim):
            raise ValueError(f"FlowMatchingHead: diffusion_model_cfg.cross_attention_dim="
                             f"{dit_cfg['cross_attention_dim']} must equal backbone_embedding_dim={backbone_embedding_dim}")
        dit_cfg["cross_attention_dim"] = backbone_embedding_dim
        if use_vlln and vl_cfg["num_attention_heads"] * vl_cfg["attention_head_dim"] != backbone_embedding_dim:
            raise ValueError("FlowMatchingHead: vl_self_attention_cfg heads×head dim must equal "
                             f"backbone_embedding_dim={backbone_embedding_dim}")

        self.state_dim, self.action_dim, self.hidden_size = int(state_dim), int(action_dim), int(hidden_size)
        self.max_state_dim = int(max_state_dim if max_state_dim is not None else state_dim)
        self.max_action_dim = int(max_action_dim if max_action_dim is not None else action_dim)
        for data, internal in (("state_dim", "max_state_dim"), ("action_dim", "max_action_dim")):
            if getattr(self, internal) < getattr(self, data):
                raise ValueError(f"FlowMatchingHead.{internal}={getattr(self, internal)} must be >= "
                                 f"{data}={getattr(self, data)} (the release pads state to 64, actions to 32)")
        self.input_embedding_dim = int(input_embedding_dim)
        # `traj_length` is FluxVLA's config name for the chunk length
        self.chunk_length, self.num_inference_timesteps = int(traj_length), int(num_inference_timesteps)
        self.num_layers, self.num_heads = num_layers, num_heads  # FluxVLA's config surface; see the docstring
        self.max_num_embodiments = int(max_num_embodiments)
        self.num_timestep_buckets, self.noise_s = int(num_timestep_buckets), float(noise_s)
        self.noise_beta_alpha, self.noise_beta_beta = float(noise_beta_alpha), float(noise_beta_beta)
        self.mask_padding = bool(mask_padding)

        # At the release's padded widths: the state zero-padded to max_state_dim, the flow over max_action_dim.
        self.state_encoder = CategorySpecificMLP(max_num_embodiments, self.max_state_dim, hidden_size,
                                                 input_embedding_dim)
        self.action_encoder = MultiEmbodimentActionEncoder(self.max_action_dim, input_embedding_dim,
                                                           max_num_embodiments)
        self.action_decoder = CategorySpecificMLP(max_num_embodiments, hidden_size, hidden_size, self.max_action_dim)
        self.model = DiT(**dit_cfg)
        self.future_tokens = nn.Embedding(num_target_vision_tokens, input_embedding_dim)
        nn.init.normal_(self.future_tokens.weight, mean=0.0, std=0.02)
        self.vlln = nn.LayerNorm(backbone_embedding_dim) if use_vlln else nn.Identity()
        self.vl_self_attention = SelfAttentionTransformer(**vl_cfg) if use_vlln else None
        self.position_embedding = None
        if add_positional_embeddings:
            self.position_embedding = nn.Embedding(max_seq_len, input_embedding_dim)
            nn.init.normal_(self.position_embedding.weight, mean=0.0, std=0.02)

    # Parameters GR00T's `tune_projector` covers: the embodiment-specific encoders/decoder and positions.
    PROJECTOR_MODULES = ("state_encoder", "action_encoder", "action_decoder", "position_embedding")

    # ---- pieces shared by training and sampling ------------------------------------------------------
    def encode_context(self, features: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        features = self.vlln(features)
        if self.vl_self_attention is not None:
            features = self.vl_self_attention(features, key_mask=mask if self.mask_padding else None)
        return features

    def _check_ids(self, embodiment_ids: torch.Tensor, batch: int) -> torch.Tensor:
        ids = torch.as_tensor(embodiment_ids).long().reshape(-1)
        if ids.numel() != batch:
            raise ValueError(f"FlowMatchingHead: embodiment_ids has {ids.numel()} entries for a batch of {batch}")
        if (ids < 0).any() or (ids >= self.max_num_embodiments).any():
            raise ValueError(f"FlowMatchingHead: embodiment_ids {ids.tolist()} outside [0, {self.max_num_embodiments})")
        return ids

    def _velocity(self, noisy: torch.Tensor, t_bucket: torch.Tensor, state_tokens: torch.Tensor,
                  context: torch.Tensor, mask: torch.Tensor | None, ids: torch.Tensor) -> torch.Tensor:
        action_tokens = self.action_encoder(noisy, t_bucket, ids)
        if self.position_embedding is not None:
            action_tokens = action_tokens + self.position_embedding.weight[: noisy.shape[1]].unsqueeze(0)
        future = self.future_tokens.weight.unsqueeze(0).expand(noisy.shape[0], -1, -1)
        tokens = torch.cat([state_tokens, future, action_tokens], dim=1)
        out = self.model(tokens, context, t_bucket, encoder_attention_mask=mask if self.mask_padding else None)
        return self.action_decoder(out, ids)[:, -noisy.shape[1]:]

    def sample_time(self, batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        u = torch.distributions.Beta(torch.tensor(self.noise_beta_alpha, device=device),
                                     torch.tensor(self.noise_beta_beta, device=device)).sample((batch,))
        return ((self.noise_s - u) / self.noise_s).to(dtype)

    # ---- training ----------------------------------------------------------------------------------------
    def forward(self, input_features: torch.Tensor, states: torch.Tensor, attention_mask: torch.Tensor | None,
                embodiment_ids: torch.Tensor, actions: torch.Tensor, action_masks: torch.Tensor | None = None,
                noise: torch.Tensor | None = None, time: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Flow-matching loss: masked MSE between predicted and true velocity, averaged over valid entries."""
        b = input_features.shape[0]
        ids = self._check_ids(embodiment_ids, b).to(input_features.device)
        if actions.shape[1:] != (self.chunk_length, self.max_action_dim):
            raise ValueError(f"FlowMatchingHead: actions {tuple(actions.shape)} must be [B, {self.chunk_length}, "
                             f"max_action_dim={self.max_action_dim}] (zero-padded, padding masked out)")
        actions = actions.to(input_features.dtype)
        context = self.encode_context(input_features, attention_mask)
        state_tokens = self.state_encoder(states.to(input_features.dtype).unsqueeze(1), ids)
        noise = torch.randn_like(actions) if noise is None else noise.to(actions)
        t = self.sample_time(b, actions.device, actions.dtype) if time is None else time.to(actions)
        noisy = (1 - t[:, None, None]) * noise + t[:, None, None] * actions
        t_bucket = (t * self.num_timestep_buckets).long()
        pred = self._velocity(noisy, t_bucket, state_tokens, context, attention_mask, ids)
        err = F.mse_loss(pred, actions - noise, reduction="none")
        if action_masks is None:
            loss = err.mean()
        else:
            m = action_masks.to(err.dtype)
            loss = (err * m).sum() / m.sum().clamp_min(1.0)
        return {"loss": loss}

    # ---- sampling ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_action(self, input_features: torch.Tensor, states: torch.Tensor,
                       attention_mask: torch.Tensor | None, embodiment_ids: torch.Tensor,
                       noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Euler-integrate the velocity field from noise (t=0) to actions (t=1) over all `max_action_dim` dims, as
        the release does (noise in the padded dims too, fed back each step); returns [B, chunk_length, action_dim]."""
        b, device, dtype = input_features.shape[0], input_features.device, input_features.dtype
        ids = self._check_ids(embodiment_ids, b).to(device)
        shape = (b, self.chunk_length, self.max_action_dim)
        if noise is None:
            x = torch.randn(shape, device=device, dtype=dtype, generator=generator)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"FlowMatchingHead.predict_action: noise {tuple(noise.shape)} must be {shape}")
        else:
            x = noise.to(device=device, dtype=dtype)
        context = self.encode_context(input_features, attention_mask)
        state_tokens = self.state_encoder(states.to(dtype).unsqueeze(1), ids)
        steps = self.num_inference_timesteps
        dt = 1.0 / steps
        for step in range(steps):
            bucket = int(step / float(steps) * self.num_timestep_buckets)
            t_bucket = torch.full((b,), bucket, device=device, dtype=torch.long)
            x = x + dt * self._velocity(x, t_bucket, state_tokens, context, attention_mask, ids)
        return x[..., :self.action_dim]
