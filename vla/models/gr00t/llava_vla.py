"""`LlavaVLA`: a VLM backbone (`EagleBackbone`) feeding an action head (`FlowMatchingHead`) — GR00T-N1.5.

Model contract (vla/models/base.py): `forward(batch) -> {"loss", ...}`, `predict_action(batch, *, noise=None)
-> [B, chunk, action_dim]` (normalised units), `action_dim` / `state_dim` / `chunk_length`, `load_pretrained()`,
`block_types`.

Batch widths: the head runs at the release's padded widths (`max_state_dim` 64, `max_action_dim` 32).
States (<= state_dim wide) are zero-padded to max_state_dim; actions wider than `action_dim` are cut back
only where `action_masks` marks the extra dims as padding (real action data is never silently dropped),
then zero-padded to max_action_dim with the padding masked out of the loss, as the release trains.
Sampling integrates all max_action_dim dims and returns the first action_dim.

`forward` also takes optional batch keys `noise` [B, chunk, max_action_dim] and `time` [B] to pin the
flow-matching draw (tests, debugging); by default both are sampled.

Freezing: `freeze_vlm_backbone` freezes the vision tower and the LLM; `freeze_projector` freezes the
projectors (Eagle's `mlp1`/`eagle_linear` and the head's embodiment encoders/decoder, GR00T's
`tune_projector` group). With `use_lora`, every base weight is frozen and only the peft adapters (on
`lora_target_modules`) and the projectors not frozen train.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from vla.config import register
from vla.models.gr00t.action_head import FlowMatchingHead
from vla.models.gr00t.eagle import UNUSED_CHECKPOINT_PREFIXES, EagleBackbone
from vla.models.loading import CheckpointMismatchError, load_weights, read_state_dict, remap_state_dict
from vla.models.base import VLAModel
from vla.models.lora import apply_lora, freeze


# Attention projections of SigLIP (q/k/v/out_proj), Qwen3 (q/k/v/o_proj) and the DiT/adapter (to_q/k/v/out.0).
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "out_proj", "to_q", "to_k", "to_v", "to_out.0")


def read_pretrained(path: str | Path) -> dict[str, torch.Tensor]:
    """A checkpoint file, or an HF-style directory (`model.safetensors`, or shards listed by
    `model.safetensors.index.json`, as GR00T-N1.5-3B ships)."""
    path = Path(path)
    if path.is_file():
        return read_state_dict(path)
    if not path.is_dir():
        raise FileNotFoundError(f"LlavaVLA.pretrained_name_or_path: {path} is neither a checkpoint file nor a "
                                f"directory")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    else:
        files = sorted(p.name for p in path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"LlavaVLA.pretrained_name_or_path: no .safetensors files in {path}")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(read_state_dict(path / name))
    return state


@register
class LlavaVLA(VLAModel):
    def __init__(self, vlm_backbone: nn.Module, vla_head: nn.Module, pretrained_name_or_path: str | None = None,
                 name_mapping: Mapping[str, str] | None = None, strict_mapping: bool = True,
                 allow_missing_keys: Sequence[str] = (),
                 freeze_vlm_backbone: bool = False, freeze_projector: bool = False, use_lora: bool = False,
                 lora_rank: int = 16, lora_alpha: float | None = None, lora_dropout: float = 0.0,
                 lora_target_modules: Sequence[str] = DEFAULT_LORA_TARGETS):
        super().__init__()
        if not isinstance(vlm_backbone, EagleBackbone):
            raise ValueError(f"LlavaVLA.vlm_backbone must be an EagleBackbone, got {type(vlm_backbone).__name__}")
        if not isinstance(vla_head, FlowMatchingHead):
            raise ValueError(f"LlavaVLA.vla_head must be a FlowMatchingHead, got {type(vla_head).__name__}")
        expects = vla_head.model.transformer_blocks[0].attn1.to_k.in_features  # the DiT cross-attends the features
        if vlm_backbone.output_dim != expects:
            raise ValueError(f"LlavaVLA: the backbone outputs {vlm_backbone.output_dim}-wide features but the head "
                             f"expects backbone_embedding_dim={expects}")
        self.vlm_backbone, self.vla_head = vlm_backbone, vla_head
        self.pretrained_name_or_path = pretrained_name_or_path
        self.name_mapping = dict(name_mapping or {})
        self.strict_mapping = bool(strict_mapping)
        self.allow_missing_keys = [str(k) for k in allow_missing_keys]
        self.action_dim, self.state_dim = vla_head.action_dim, vla_head.state_dim
        self.max_action_dim, self.max_state_dim = vla_head.max_action_dim, vla_head.max_state_dim
        self.chunk_length = vla_head.chunk_length
        self.tokens_per_image = vlm_backbone.tokens_per_image  # the prompt transforms take it from here

        projectors = self.projector_prefixes()
        if use_lora:
            apply_lora(self, rank=lora_rank, target_modules=list(lora_target_modules), dropout=lora_dropout,
                       alpha=lora_alpha, trainable_modules=() if freeze_projector else projectors)
        else:
            if freeze_vlm_backbone:
                freeze(self.vlm_backbone.vlm.vision_model)
                freeze(self.vlm_backbone.vlm.language_model)
            if freeze_projector:
                for prefix in projectors:
                    freeze(self.get_submodule(prefix))

    def projector_prefixes(self) -> tuple[str, ...]:
        names = [f"vlm_backbone.{p}" for p in EagleBackbone.PROJECTOR_MODULES]
        names += [f"vla_head.{p}" for p in FlowMatchingHead.PROJECTOR_MODULES]
        present = {n for n, _ in self.named_modules()}
        return tuple(n for n in names if n in present and any(True for _ in self.get_submodule(n).parameters()))

    @property
    def block_types(self) -> tuple[type[nn.Module], ...]:
        """The blocks FSDP shards one by one (trainer/parallelize.py): SigLIP and Qwen3 layers, DiT and
        adapter blocks."""
        vlm = self.vlm_backbone.vlm
        blocks = [vlm.vision_model.vision_model.encoder.layers[0], vlm.language_model.model.layers[0],
                  self.vla_head.model.transformer_blocks[0]]
        if self.vla_head.vl_self_attention is not None:
            blocks.append(self.vla_head.vl_self_attention.transformer_blocks[0])
        return tuple(dict.fromkeys(type(b) for b in blocks))

    def gradient_checkpointing_enable(self) -> None:
        """Recompute activations in backward: transformers' switch for SigLIP and Qwen3, ours for the DiT
        and the adapter."""
        vlm = self.vlm_backbone.vlm
        for hf_model in (vlm.vision_model.vision_model, vlm.language_model.model):
            if hasattr(hf_model, "activation_checkpointing_enable"):  # transformers >= 5 name
                hf_model.activation_checkpointing_enable({"use_reentrant": False})
            else:
                hf_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.vla_head.model.gradient_checkpointing = True
        if self.vla_head.vl_self_attention is not None:
            self.vla_head.vl_self_attention.gradient_checkpointing = True

    # ---- batch handling -------------------------------------------------------------------------------------
    def _states(self, states: torch.Tensor) -> torch.Tensor:
        states = states.reshape(states.shape[0], -1) if states.dim() == 3 and states.shape[1] == 1 else states
        if states.dim() != 2 or states.shape[1] > self.state_dim:
            raise ValueError(f"LlavaVLA: states {tuple(states.shape)} must be [B, <= state_dim={self.state_dim}]")
        return nn.functional.pad(states, (0, self.max_state_dim - states.shape[1]))

    def _actions(self, actions: torch.Tensor, masks: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if actions.dim() != 3 or actions.shape[1] != self.chunk_length:
            raise ValueError(f"LlavaVLA: actions {tuple(actions.shape)} must be [B, chunk_length={self.chunk_length},"
                             f" action_dim]")
        masks = torch.ones_like(actions, dtype=torch.bool) if masks is None else masks.bool()
        if masks.shape != actions.shape:
            raise ValueError(f"LlavaVLA: action_masks {tuple(masks.shape)} must match actions {tuple(actions.shape)}")
        width = actions.shape[-1]
        if width > self.action_dim:
            if masks[..., self.action_dim:].any():
                raise ValueError(f"LlavaVLA: actions have {width} dims with valid entries past action_dim="
                                 f"{self.action_dim} (action_masks); raise the head's action_dim")
            actions, masks = actions[..., : self.action_dim], masks[..., : self.action_dim]
        pad = self.max_action_dim - actions.shape[-1]
        return nn.functional.pad(actions, (0, pad)), nn.functional.pad(masks, (0, pad), value=False)

    def _context(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vlm_backbone(self.need(batch, "images"), self.need(batch, "lang_tokens"),
                                 batch.get("lang_masks"), batch.get("img_masks"))

    # ---- contract ----------------------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        features, mask = self._context(batch)
        actions, masks = self._actions(self.need(batch, "actions"), batch.get("action_masks"))
        return self.vla_head(features, self._states(self.need(batch, "states")), mask,
                             self.need(batch, "embodiment_ids"), actions, masks,
                             noise=batch.get("noise"), time=batch.get("time"))

    @torch.no_grad()
    def predict_action(self, batch: Mapping[str, Any], *, noise: torch.Tensor | None = None) -> torch.Tensor:
        """[B, chunk_length, action_dim] in normalised units; `noise` [B, chunk_length, max_action_dim] fixes
        the start point (else drawn from the global RNG)."""
        features, mask = self._context(batch)
        return self.vla_head.predict_action(features, self._states(self.need(batch, "states")), mask,
                                            self.need(batch, "embodiment_ids"), noise=noise)

    def load_pretrained(self):
        """Load `pretrained_name_or_path` through `name_mapping`; returns the LoadReport (None when unset).
        Strict unless `strict_mapping=False`: anything missing, shape-mismatched or unexpected outside
        `allow_missing_keys` raises CheckpointMismatchError naming it."""
        if not self.pretrained_name_or_path:
            return None
        state = remap_state_dict(read_pretrained(self.pretrained_name_or_path), self.name_mapping)
        vlm_prefix = "vlm_backbone.vlm."
        ignore = {k: "unused by GR00T (LM head, SigLIP pooling head)" for k in state
                  if any(k.startswith(vlm_prefix + p) for p in UNUSED_CHECKPOINT_PREFIXES)}
        try:
            return load_weights(self, state, name_mapping=None, strict=self.strict_mapping, ignore=ignore,
                                allow_missing=self.allow_missing_keys, source_name=str(self.pretrained_name_or_path))
        except CheckpointMismatchError as err:
            raise CheckpointMismatchError(err.report, str(self.pretrained_name_or_path),
                                          self._width_hint(err.report)) from None

    def _width_hint(self, report) -> str:
        widths = {}
        for name, ckpt, _ in report.mismatched:
            if name == "vla_head.state_encoder.layer1.W":
                widths["max_state_dim"] = ckpt[1]
            elif name in ("vla_head.action_encoder.W1.W", "vla_head.action_decoder.layer2.W"):
                widths["max_action_dim"] = ckpt[1] if name.endswith("W1.W") else ckpt[2]
        if not widths:
            return ""
        return ("the checkpoint's action head runs at padded widths: write "
                + ", ".join(f"{k}={v}" for k, v in sorted(widths.items()))
                + f" in vla_head (state_dim={self.state_dim} and action_dim={self.action_dim} stay the data's)")
