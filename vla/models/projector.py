"""`LinearProjector`: the linear building block FluxVLA's model configs name.

    LinearProjector(in_dim: int, out_dim: int, bias: bool = True)
    forward(x: Tensor[..., in_dim]) -> Tensor[..., out_dim]

The weight lives in `.projector` (an `nn.Linear`) so checkpoint keys read
`<name>.projector.weight` — the prefix the configs' `name_mapping` and
`lora_target_modules` ('state_proj.projector', ...) refer to.
"""
from __future__ import annotations

import torch
from torch import nn

from vla.config import register


@register
class LinearProjector(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, bias: bool = True):
        super().__init__()
        if int(in_dim) <= 0 or int(out_dim) <= 0:
            raise ValueError(f"LinearProjector needs positive dims, got in_dim={in_dim}, out_dim={out_dim}")
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        self.projector = nn.Linear(self.in_dim, self.out_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"LinearProjector expected last dim {self.in_dim}, got shape {tuple(x.shape)}")
        return self.projector(x)
