"""Small shared fixtures for the model tests: tiny π0 configs, a tiny batch, a tiny tokenizer."""
from __future__ import annotations

import copy

import pytest
import torch

from vla.data.tiny_tokenizer import build_tiny_tokenizer

VOCAB = 512
CHUNK, STATE_DIM, ACTION_DIM, PADDED_ACTION_DIM = 4, 8, 7, 14
IMAGE = 28  # SigLIP patch 14 -> 4 tokens per camera; the model allows any multiple of the patch

TINY_VLM = dict(
    text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                     num_key_value_heads=1, head_dim=16, vocab_size=VOCAB),
    vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                       patch_size=14, image_size=IMAGE),
    projection_dim=32, image_token_id=VOCAB)
TINY_EXPERT = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                   num_key_value_heads=1, head_dim=16, vocab_size=VOCAB)


def tiny_pi0_cfg(**overrides) -> dict:
    w = TINY_EXPERT["hidden_size"]
    cfg = dict(
        type="PI0FlowMatching",
        vlm_backbone=dict(type="PaliGemma", vlm_backbone_id="paligemma_3b_pt_224", vlm_config=copy.deepcopy(TINY_VLM)),
        llm_expert=dict(type="GemmaLLMBackbone", llm_backbone_id="gemma_300m", llm_family="gemma",
                        llm_config=dict(TINY_EXPERT)),
        proj_width=w, n_action_steps=CHUNK,
        state_proj=dict(type="LinearProjector", in_dim=STATE_DIM, out_dim=w),
        action_in_proj=dict(type="LinearProjector", in_dim=ACTION_DIM, out_dim=w),
        action_out_proj=dict(type="LinearProjector", in_dim=w, out_dim=ACTION_DIM),
        action_time_mlp_in=dict(type="LinearProjector", in_dim=2 * w, out_dim=w),
        action_time_mlp_out=dict(type="LinearProjector", in_dim=w, out_dim=w),
        num_inference_steps=3)
    cfg.update(overrides)
    return cfg


RELEASE_WIDTH = 32  # openpi pads state and actions to 32 inside the model


def padded_pi0_cfg(pi05: bool = False, **overrides) -> dict:
    """tiny_pi0_cfg at openpi's release widths: projectors 32 wide, data widths STATE_DIM / ACTION_DIM."""
    w, r = TINY_EXPERT["hidden_size"], RELEASE_WIDTH
    cfg = tiny_pi0_cfg(state_dim=STATE_DIM, action_dim=ACTION_DIM, max_state_dim=r, max_action_dim=r,
                       state_proj=dict(type="LinearProjector", in_dim=STATE_DIM if pi05 else r, out_dim=w),
                       action_in_proj=dict(type="LinearProjector", in_dim=r, out_dim=w),
                       action_out_proj=dict(type="LinearProjector", in_dim=w, out_dim=r))
    if pi05:
        cfg.update(type="PI05FlowMatching", action_time_mlp_in=dict(type="LinearProjector", in_dim=w, out_dim=w))
    cfg.update(overrides)
    return cfg


def make_batch(batch_size: int = 2, lang_len: int = 6, seed: int = 0, pad_last_prompt: bool = True) -> dict:
    g = torch.Generator().manual_seed(seed)
    lang_masks = torch.ones(batch_size, lang_len, dtype=torch.bool)
    if pad_last_prompt:
        lang_masks[-1, lang_len - 2:] = False  # a shorter prompt, right-padded as ProcessPrompts does
    action_masks = torch.zeros(batch_size, CHUNK, PADDED_ACTION_DIM, dtype=torch.bool)
    action_masks[..., :ACTION_DIM] = True
    return dict(
        images=torch.randn(batch_size, 2, 3, IMAGE, IMAGE, generator=g),
        img_masks=torch.ones(batch_size, 2, dtype=torch.bool),
        lang_tokens=torch.randint(5, VOCAB, (batch_size, lang_len), generator=g) * lang_masks,
        lang_masks=lang_masks,
        states=torch.randn(batch_size, STATE_DIM, generator=g),
        actions=torch.randn(batch_size, CHUNK, PADDED_ACTION_DIM, generator=g) * action_masks,
        action_masks=action_masks,
        embodiment_ids=torch.full((batch_size,), 31, dtype=torch.long),
    )


@pytest.fixture
def tiny_batch() -> dict:
    return make_batch()


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer", vocab_size=VOCAB)
