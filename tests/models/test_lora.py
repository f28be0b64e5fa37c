"""LoRA via peft: what trains, what the adapters change, and merging back to plain weights."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from vla.models.lora import apply_lora, has_lora, merge_lora, trainable_names
from vla.models.projector import LinearProjector


class Attn(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj, self.o_proj, self.mlp = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x):
        return self.mlp(self.o_proj(self.q_proj(x)))


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = Attn()
        self.state_proj = LinearProjector(8, 8)
        self.time_mlp = LinearProjector(8, 8)

    def forward(self, x):
        return self.time_mlp(self.layer(self.state_proj(x)))


def test_only_adapters_and_unfrozen_projectors_train():
    model = apply_lora(Toy(), rank=4, target_modules=["q_proj", "o_proj", "state_proj.projector"],
                       trainable_modules=["time_mlp", "state_proj"])
    names = set(trainable_names(model))
    assert names == {
        "layer.q_proj.lora_A.default.weight", "layer.q_proj.lora_B.default.weight",
        "layer.o_proj.lora_A.default.weight", "layer.o_proj.lora_B.default.weight",
        "state_proj.projector.lora_A.default.weight", "state_proj.projector.lora_B.default.weight",
        "time_mlp.projector.weight", "time_mlp.projector.bias"}


def test_merge_restores_plain_keys_and_same_function():
    torch.manual_seed(0)
    model = apply_lora(Toy(), rank=4, target_modules=["q_proj", "state_proj.projector"], alpha=8)
    for name, p in model.named_parameters():  # lora_B starts at zero; make the adapters do something
        if "lora_B" in name:
            nn.init.normal_(p)
    x = torch.randn(3, 8)
    with torch.no_grad():
        y = model(x)
        merged = merge_lora(model)
        assert not has_lora(merged)
        assert set(merged.state_dict()) == set(Toy().state_dict())
        torch.testing.assert_close(merged(x), y, atol=1e-5, rtol=1e-5)


def test_bad_targets_named():
    with pytest.raises(ValueError, match="nonexistent_proj"):
        apply_lora(Toy(), rank=4, target_modules=["q_proj", "nonexistent_proj"])
    with pytest.raises(ValueError, match="positive"):
        apply_lora(Toy(), rank=0, target_modules=["q_proj"])
