"""openpi π0 / π0.5 checkpoints in their two public layouts, brought to the one a `name_mapping` is written for.

    to_mapping_layout(state_dict, name_mapping) -> (state_dict, ignore)
        `ignore` {checkpoint key: reason} lists the tensors the release carries but a flow-matching policy never
        uses (for `load_weights(..., ignore=...)`).
    padded_width_hint(report, model) -> str      what to write in the config when widths do not match

The layouts hold the same module, openpi's `PI0Pytorch`:
- openpi's JAX -> PyTorch converter saves it with `safetensors.torch.save_model(model)`: keys have no prefix
  (`paligemma_with_expert.…`, `action_in_proj.weight`), and PaliGemma's tied token embedding is stored once.
  save_model keeps one name per shared tensor, the first in sorted order, so it is stored as
  `paligemma_with_expert.paligemma.lm_head.weight` and `…language_model.embed_tokens.weight` is absent.
- LeRobot's π0 policy holds it as `self.model`, so every key starts with `model.` (the guide configs'
  `name_mapping` targets this form); the embedding may be stored under both names.
The action expert's `gemma_expert.lm_head.weight` is in both: openpi drops the expert's token embedding but
keeps its LM head, which flow matching never uses.
"""
from __future__ import annotations

from typing import Mapping

import torch

LM_HEAD = "paligemma_with_expert.paligemma.lm_head.weight"
EMBED = "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
EXPERT_LM_HEAD = "paligemma_with_expert.gemma_expert.lm_head.weight"
LEROBOT_PREFIX = "model."


def _mapping_wants_prefix(state_dict: Mapping[str, torch.Tensor], name_mapping: Mapping[str, str] | None) -> bool:
    targets = [t for t in (name_mapping or {}).values()]
    if not targets:  # no mapping: keep the file's own layout
        return any(k.startswith(LEROBOT_PREFIX) for k in state_dict)
    return all(t.startswith(LEROBOT_PREFIX) for t in targets)


def to_mapping_layout(state_dict: Mapping[str, torch.Tensor], name_mapping: Mapping[str, str] | None
                      ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    prefixed = all(k.startswith(LEROBOT_PREFIX) for k in state_dict)
    want = _mapping_wants_prefix(state_dict, name_mapping)
    if want and not prefixed:
        sd = {LEROBOT_PREFIX + k: v for k, v in state_dict.items()}
    elif prefixed and not want:
        sd = {k[len(LEROBOT_PREFIX):]: v for k, v in state_dict.items()}
    else:
        sd = dict(state_dict)
    p = LEROBOT_PREFIX if want else ""
    ignore: dict[str, str] = {}
    lm_head, embed = p + LM_HEAD, p + EMBED
    if lm_head in sd and embed not in sd:  # the converter's output: the tied embedding under its LM-head name
        sd[embed] = sd.pop(lm_head)
    elif lm_head in sd and torch.equal(sd[lm_head], sd[embed]):
        ignore[lm_head] = f"tied to {embed} (PaliGemma ties its LM head to the token embedding)"
    if p + EXPERT_LM_HEAD in sd:
        ignore[p + EXPERT_LM_HEAD] = "the action expert's LM head: flow matching never decodes tokens"
    return sd, ignore


def padded_width_hint(report, model) -> str:
    """A sentence saying which config values make the model's widths match the checkpoint's, or ''."""
    wanted = {}
    for name, ckpt, _ in report.mismatched:
        if name.startswith(("state_proj.", "action_in_proj.")) and name.endswith("weight") and len(ckpt) == 2:
            wanted["max_state_dim" if name.startswith("state_proj") else "max_action_dim"] = ckpt[1]
        elif name.startswith("action_out_proj.") and len(ckpt) >= 1:
            wanted["max_action_dim"] = ckpt[0]
    if not wanted:
        return ""
    parts = []
    for key, width in sorted(wanted.items()):
        proj = "state_proj=dict(type='LinearProjector', in_dim={w}, ...)" if key == "max_state_dim" else \
            "action_in_proj in_dim={w} and action_out_proj out_dim={w}"
        parts.append(f"{key}={width} with {proj.format(w=width)}")
    return (f"the checkpoint runs at padded widths (openpi pads state and actions to 32): write "
            f"{'; '.join(parts)} in the model config, keeping state_dim={model.state_dim} and "
            f"action_dim={model.action_dim} as the data's widths")
