"""`VLAModel`: the contract every model family implements (PI0FlowMatching, PI05FlowMatching, LlavaVLA).

    chunk_length: int                  actions per predicted chunk
    action_dim: int                    width of the model's (normalised, padded) actions
    state_dim: int | None              width of the proprio input (None: the model takes no state)
    forward(batch) -> {"loss": ...}    the training loss of one collated batch (plus named extras)
    predict_action(batch, *, noise=None) -> [B, chunk_length, action_dim]
                                       normalised actions for one collated batch, no gradients
    load_pretrained() -> LoadReport | None
                                       load the configured pretrained weights (None: none configured)
    noise_dim: int                     the width the flow runs at (`max_action_dim` where the model pads
                                       actions internally); noise is [B, chunk_length, noise_dim]
    block_types: tuple[type, ...]      the submodule classes that are the model's blocks: the units
                                       trainer/parallelize.py shards with FSDP (data only; the model
                                       never sees its wrappers)

Randomness comes from one place for every family. Training: `batch["noise"]` ([B, chunk, noise_dim])
and `batch["time"]` ([B]) if the batch has them (tests, exact comparisons), else drawn from the global
torch RNG, which the trainer seeds per rank and checkpoints. Inference: `noise` if given (the policy
server passes the same seeded noise for every request), else drawn from the global torch RNG.

The batch keys (`vla.data.collate.DictCollator`'s output): `images` [B, cameras, 3, H, W],
`img_masks` [B, cameras], `lang_tokens` / `lang_masks` [B, L], `states` [B, S], `embodiment_ids` [B]
(GR00T), and for training `actions` / `action_masks` [B, chunk, A]. A missing key is a
`BatchKeyError` naming the model, the key and the keys the batch has.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from vla.errors import VLAError


class BatchKeyError(VLAError, KeyError, ValueError):
    """A batch without a key the model needs; the message names the model, the key and what the batch has.
    (A KeyError and a ValueError both, so either kind of handler catches it.)"""

    def __str__(self) -> str:   # KeyError would repr() the message
        return str(self.args[0])


def need(batch: Mapping[str, Any], key: str, model: str) -> Any:
    """`batch[key]`, or a BatchKeyError."""
    if key not in batch:
        raise BatchKeyError(f"{model}: the batch has no {key!r} (it has {', '.join(sorted(batch)) or 'no keys'})")
    return batch[key]


class VLAModel(nn.Module):
    """Base of the model families: the contract above, and its defaults."""

    chunk_length: int
    action_dim: int
    state_dim: int | None = None
    block_types: tuple[type[nn.Module], ...] = ()
    # Weights derived for inference (fused projections, functional SigLIP) are cached between calls
    # while this is true; trainer/parallelize.py turns it off under FSDP, which refills parameter
    # storage in place.
    weight_caching: bool = True

    @property
    def noise_dim(self) -> int:
        """The width the flow runs at (noise is [B, chunk_length, noise_dim]): `max_action_dim` for
        models that pad actions internally (openpi, GR00T), else `action_dim`."""
        return int(getattr(self, "max_action_dim", None) or self.action_dim)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def predict_action(self, batch: Mapping[str, Any], *, noise: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def load_pretrained(self) -> Any:
        return None

    def need(self, batch: Mapping[str, Any], key: str) -> Any:
        return need(batch, key, type(self).__name__)
