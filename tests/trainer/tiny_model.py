"""A small policy obeying the model contract (vla/models/base.py: forward -> {"loss"}, predict_action, dims),
registered for the trainer tests until the real tiny models land. Cheap on 2 CPU cores."""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from vla.config import register
from vla.models.base import VLAModel
from vla.models.loading import load_weights


@register
class TrainerTestPolicy(VLAModel):
    """Images, prompt tokens and state -> an action chunk; MSE on the valid action entries.

    `noise=True` adds Gaussian noise to the hidden state from the global torch RNG, as
    flow-matching models draw their noise and time, so resume tests prove RNG restore.
    The loss divides by the full element count (not the valid count), so a batch split
    across ranks averages to the same loss as the whole batch on one rank.
    """

    def __init__(self, state_dim: int = 8, action_dim: int = 14, chunk_length: int = 10, vocab_size: int = 512,
                 hidden: int = 32, num_blocks: int = 2, noise: bool = False, freeze_embedding: bool = False,
                 step_delay_s: float = 0.0, pretrained_name_or_path: str | None = None,
                 name_mapping: dict | None = None):
        super().__init__()
        self.state_dim, self.action_dim, self.chunk_length = state_dim, action_dim, chunk_length
        self.noise = noise
        self.step_delay_s = step_delay_s  # slows a run down so a test can kill it at a chosen point
        self.pretrained_name_or_path, self.name_mapping = pretrained_name_or_path, name_mapping
        self.embed = nn.Embedding(vocab_size, hidden)
        self.embed.weight.requires_grad_(not freeze_embedding)
        self.image_proj = nn.Linear(3 * 4 * 4, hidden)
        self.state_proj = nn.Linear(state_dim, hidden)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU())
                                    for _ in range(num_blocks))
        self.head = nn.Linear(hidden, chunk_length * action_dim)

    def load_pretrained(self):
        if self.pretrained_name_or_path:
            return load_weights(self, self.pretrained_name_or_path, self.name_mapping, strict=True)
        return None

    def _features(self, batch) -> torch.Tensor:
        images = batch["images"]
        b, n = images.shape[:2]
        pooled = F.adaptive_avg_pool2d(images.flatten(0, 1), 4).reshape(b, n, -1).mean(1)
        mask = batch["lang_masks"].unsqueeze(-1).to(torch.float32)
        tokens = (self.embed(batch["lang_tokens"]) * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        h = self.image_proj(pooled) + tokens + self.state_proj(batch["states"])
        if self.noise:
            h = h + 0.1 * torch.randn_like(h)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h).view(b, self.chunk_length, self.action_dim)

    def forward(self, batch):
        if self.step_delay_s:
            time.sleep(self.step_delay_s)
        pred = self._features(batch)
        mask = batch["action_masks"].to(pred.dtype)
        loss = (((pred - batch["actions"].to(pred.dtype)) ** 2) * mask).sum() / mask.numel()
        return {"loss": loss}

    @torch.no_grad()
    def predict_action(self, batch, *, noise=None) -> torch.Tensor:   # its noise (if any) is internal
        return self._features(batch)
