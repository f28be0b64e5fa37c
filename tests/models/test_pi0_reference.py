"""PI0FlowMatching against transformers' PI0ForConditionalGeneration: identical weights (copied through our
name_mapping loader) and identical noise must give the same actions to 1e-4 in fp32."""
from __future__ import annotations

import copy

import torch

from vla.config import build
from vla.models.loading import load_weights
from vla.models.pi0 import TRANSFORMERS_PI0_NAME_MAPPING

from .conftest import (ACTION_DIM, CHUNK, RELEASE_WIDTH, STATE_DIM, TINY_EXPERT, TINY_VLM, make_batch,
                       padded_pi0_cfg, tiny_pi0_cfg)



def transformers_pi0(seed: int = 0, max_state_dim: int = STATE_DIM, max_action_dim: int = ACTION_DIM):
    from transformers import PI0Config, PI0ForConditionalGeneration

    vlm = copy.deepcopy(TINY_VLM)
    vlm["text_config"]["model_type"] = "gemma"
    vlm["vision_config"]["model_type"] = "siglip_vision_model"
    vlm["vision_config"]["vision_use_head"] = False
    vlm["model_type"] = "paligemma"
    config = PI0Config(vlm_config=vlm, dit_config=dict(model_type="gemma", **TINY_EXPERT), chunk_size=CHUNK,
                       max_state_dim=max_state_dim, max_action_dim=max_action_dim)
    torch.manual_seed(seed)
    model = PI0ForConditionalGeneration(config).eval()
    with torch.no_grad():  # HF initialises norms to zero-offset; perturb everything so a mix-up shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def transformers_inputs(batch: dict) -> dict:
    """The same observation in transformers' PI0 layout: image placeholder ids before the prompt."""
    b, n = batch["img_masks"].shape
    tokens_per_image = (TINY_VLM["vision_config"]["image_size"] // TINY_VLM["vision_config"]["patch_size"]) ** 2
    image_ids = torch.full((b, n * tokens_per_image), TINY_VLM["image_token_id"], dtype=torch.long)
    return dict(state=batch["states"], input_ids=torch.cat([image_ids, batch["lang_tokens"]], 1),
                pixel_values=batch["images"], pixel_attention_mask=batch["img_masks"],
                attention_mask=torch.cat([torch.ones_like(image_ids), batch["lang_masks"].long()], 1))


def paired_models(padded: bool = False):
    ref = transformers_pi0(**(dict(max_state_dim=RELEASE_WIDTH, max_action_dim=RELEASE_WIDTH) if padded else {}))
    ours = build(padded_pi0_cfg() if padded else tiny_pi0_cfg()).eval()
    report = load_weights(ours, ref.state_dict(), TRANSFORMERS_PI0_NAME_MAPPING, strict=False)
    # Everything of ours is filled; only the expert's token embedding (unused by π0) is left over.
    assert report.missing == [] and report.mismatched == []
    assert report.unexpected == ["model.dit.embed_tokens.weight"]
    return ours, ref


def test_sample_actions_matches_transformers_pi0():
    ours, ref = paired_models()
    batch = make_batch(batch_size=2, pad_last_prompt=True)
    noise = torch.randn(2, CHUNK, ACTION_DIM, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref.sample_actions(noise=noise, num_steps=5, **transformers_inputs(batch))
        got = ours.sample_actions(batch, num_steps=5, noise=noise)
    assert got.shape == (2, CHUNK, ACTION_DIM)
    assert expected.abs().max() > 0.1  # the comparison is not between two near-zero tensors
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_release_widths_compute_as_the_padded_reference():
    """At openpi's widths (32) the model pads the 8-dim state itself, runs the flow on all 32 dims (noise in
    the padded ones too) and returns the first 7: the reference fed the zero-padded state computes the same."""
    ours, ref = paired_models(padded=True)
    batch = make_batch(batch_size=2, pad_last_prompt=True)
    noise = torch.randn(2, CHUNK, RELEASE_WIDTH, generator=torch.Generator().manual_seed(1))
    inputs = transformers_inputs(batch)
    inputs["state"] = torch.nn.functional.pad(batch["states"], (0, RELEASE_WIDTH - STATE_DIM))
    with torch.no_grad():
        expected = ref.sample_actions(noise=noise, num_steps=5, **inputs)
        got = ours.sample_actions(batch, num_steps=5, noise=noise)
    assert got.shape == (2, CHUNK, ACTION_DIM) and expected.shape == (2, CHUNK, RELEASE_WIDTH)
    torch.testing.assert_close(got, expected[..., :ACTION_DIM], atol=1e-4, rtol=1e-4)
    # the padded dims feed back into the flow: integrating only 7 of them would not give the release's chunk
    alone = ours.sample_actions(batch, num_steps=5, noise=torch.nn.functional.pad(noise[..., :ACTION_DIM],
                                                                                    (0, RELEASE_WIDTH - ACTION_DIM)))
    assert (alone - got).abs().max() > 1e-3


def test_training_velocity_and_loss_match_transformers_pi0():
    ours, ref = paired_models()
    batch = make_batch(batch_size=2, pad_last_prompt=True)
    batch["action_masks"][:] = True  # transformers averages over every element
    actions = batch["actions"][..., :ACTION_DIM]
    g = torch.Generator().manual_seed(2)
    noise, t = torch.randn(2, CHUNK, ACTION_DIM, generator=g), torch.tensor([0.3, 0.8])
    with torch.no_grad():
        expected = ref(noise=noise, timestep=t, actions=actions, **transformers_inputs(batch))
        got = ours(dict(batch, actions=actions, action_masks=batch["action_masks"][..., :ACTION_DIM],
                        noise=noise, time=t))
    torch.testing.assert_close(got["loss"], expected.loss, atol=1e-4, rtol=1e-4)


def test_a_wrong_weight_is_detected():
    """The comparison can fail: one perturbed expert weight moves the actions past the tolerance."""
    ours, ref = paired_models()
    batch = make_batch(batch_size=1, pad_last_prompt=False)
    noise = torch.randn(1, CHUNK, ACTION_DIM, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours.llm_expert.llm.model.layers[1].mlp.down_proj.weight.add_(0.05)
        expected = ref.sample_actions(noise=noise, num_steps=3, **transformers_inputs(batch))
        got = ours.sample_actions(batch, num_steps=3, noise=noise)
    assert (got - expected).abs().max() > 1e-3
