"""π0.5 (Physical Intelligence, 2025, arXiv:2504.16054): π0 with the two published changes.

    PI05FlowMatching(..same surface as PI0FlowMatching.., state_dim=None, num_state_bins=256,
                     state_token_offset=None)

1. Time enters the action expert through adaptive RMSNorm: cond = swish(mlp_out(swish(mlp_in(sin_emb(t))))),
   and every expert norm (both per layer and the final one) becomes `AdaRMSNorm`, whose `dense` maps cond to
   (scale, shift, gate): y = rms(x)·(1+scale) + shift, and the residual branch is multiplied by gate
   (zero-initialised, adaLN-Zero). The action tokens are just `action_in_proj(x_t)`; there is no state token.
   `action_time_mlp_in/out` are the time MLP (openpi `time_mlp_in/out`), so both are proj_width -> proj_width.
2. The state is discretised into `num_state_bins` bins over [-1, 1] (openpi: np.digitize over
   linspace(-1, 1, 257)[:-1]) and appended to the prompt as tokens `state_token_offset + bin` (default: the
   last `num_state_bins` ids of the VLM vocabulary). openpi writes the bins as text digits through the
   tokenizer; reserved ids keep the data pipeline model-agnostic and give one token per state dimension.
`state_proj` is accepted for the config surface of FluxVLA's π0.5 config; only its `in_dim` (the state size) is used.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from vla.config import register
from vla.models.pi0 import PI0FlowMatching, _as_module


class AdaRMSNorm(nn.Module):
    """Gemma RMSNorm conditioned on a vector: returns (normalised x, residual gate)."""

    def __init__(self, dim: int, cond_dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.dense = nn.Linear(cond_dim, 3 * dim)
        nn.init.zeros_(self.dense.weight)
        nn.init.zeros_(self.dense.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        scale, shift, gate = self.dense(cond.to(self.dense.weight.dtype))[:, None, :].chunk(3, dim=-1)
        return (normed * (1 + scale.float()) + shift.float()).to(x.dtype), gate.to(x.dtype)


def discretize_state(state: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Bin index in [0, num_bins) of each value clipped to [-1, 1], as openpi's np.digitize(...) - 1."""
    edges = torch.linspace(-1.0, 1.0, num_bins + 1, device=state.device)[:-1]
    return (torch.bucketize(state.float().clamp(-1.0, 1.0), edges, right=True) - 1).clamp(0, num_bins - 1)


def _check_guide_block(kwargs: dict) -> None:
    """The guide's π0.5 block is π0's (a 2·width concat MLP, π0's checkpoint names): say what π0.5 needs."""
    width = int(kwargs.get("proj_width", 1024))
    mlp_in = kwargs.get("action_time_mlp_in")
    in_dim = mlp_in.get("in_dim") if isinstance(mlp_in, dict) else getattr(mlp_in, "in_dim", None)
    if in_dim is not None and int(in_dim) == 2 * width:
        raise ValueError(
            f"action_time_mlp_in in_dim={in_dim} is π0's action+time concat MLP; π0.5 feeds time alone to an MLP "
            f"whose output conditions the expert's adaptive RMSNorms, so write "
            f"action_time_mlp_in=dict(type='LinearProjector', in_dim={width}, out_dim={width}) "
            f"(openpi's time_mlp_in)")
    mapping = kwargs.get("name_mapping") or {}
    for ours, openpi in (("action_time_mlp_in.projector", "time_mlp_in"),
                         ("action_time_mlp_out.projector", "time_mlp_out")):
        theirs = str(mapping.get(ours, ""))
        if theirs.endswith("action_" + openpi):
            fixed = theirs[: -len("action_" + openpi)] + openpi
            raise ValueError(f"name_mapping[{ours!r}]={theirs!r}: openpi's π0.5 checkpoints name it {openpi!r}; "
                             f"write {ours!r}: {fixed!r}")


@register
class PI05FlowMatching(PI0FlowMatching):
    def __init__(self, *args: Any, state_dim: int | None = None, num_state_bins: int = 256,
                 state_token_offset: int | None = None, **kwargs: Any):
        state_proj = kwargs.pop("state_proj", None)
        if state_dim is None and state_proj is not None:
            state_proj = _as_module(state_proj, "state_proj")
            state_dim = state_proj.in_dim
        if state_dim is None:
            raise ValueError("PI05FlowMatching needs state_dim (or a state_proj whose in_dim is the state size)")
        _check_guide_block(kwargs)
        self._pending_state = (int(num_state_bins), state_token_offset)
        super().__init__(*args, state_dim=state_dim, **kwargs)

    def _internal_state_width(self) -> int:
        """State tokens in the prompt: one per dim of the state padded to `max_state_dim` (openpi pads to 32
        and discretises every dim, the padding included)."""
        return int(self._dims["max_state_dim"] or self._dims["state_dim"])

    def projector_names(self) -> tuple[str, ...]:
        return ("action_in_proj", "action_out_proj", "action_time_mlp_in", "action_time_mlp_out")

    def _projector_shapes(self) -> dict[str, tuple[int | None, int]]:
        w = self.proj_width
        return {"action_in_proj": (None, w), "action_out_proj": (w, self.max_action_dim),
                "action_time_mlp_in": (w, w), "action_time_mlp_out": (w, w)}

    def _prepare_expert(self) -> None:
        self.num_state_bins, offset = self._pending_state
        vocab = self.vlm_backbone.config.text_config.vocab_size
        self.state_token_offset = vocab - self.num_state_bins if offset is None else int(offset)
        if not 0 <= self.state_token_offset <= vocab - self.num_state_bins:
            raise ValueError(f"state_token_offset={self.state_token_offset} with {self.num_state_bins} bins "
                             f"does not fit the VLM vocabulary of {vocab}")
        expert = self.llm_expert.language_model
        w, eps = self.proj_width, self.llm_expert.config.rms_norm_eps
        for layer in expert.layers:
            layer.input_layernorm = AdaRMSNorm(layer.input_layernorm.weight.shape[0], w, eps)
            layer.post_attention_layernorm = AdaRMSNorm(layer.post_attention_layernorm.weight.shape[0], w, eps)
        expert.norm = AdaRMSNorm(expert.norm.weight.shape[0], w, eps)

    def _lang_tokens(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, valid = super()._lang_tokens(batch)
        states = self.padded_states(batch)
        state_ids = discretize_state(states, self.num_state_bins) + self.state_token_offset
        return torch.cat([ids, state_ids.to(ids.dtype)], 1), torch.cat([valid, torch.ones_like(state_ids, dtype=torch.bool)], 1)

    def embed_actions(self, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.action_in_proj(x_t)
        te = self.time_embedding(t).to(tokens.dtype)
        cond = F.silu(self.action_time_mlp_out(F.silu(self.action_time_mlp_in(te))))
        return tokens, cond

    def _step_embedder(self, times: torch.Tensor):
        """The adaRMS conditioning depends on t only: compute it for every step of the grid at once."""
        te = self.time_embedding(times).to(self.action_time_mlp_in.projector.weight.dtype)
        cond = F.silu(self.action_time_mlp_out(F.silu(self.action_time_mlp_in(te))))  # [steps, width]
        return lambda x, i: (self.action_in_proj(x), cond[i].expand(x.shape[0], -1))

    def _suffix_prefix_tokens(self, batch) -> list[torch.Tensor]:
        return []  # the state is in the prompt
