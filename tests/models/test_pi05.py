"""π0.5: adaRMS time conditioning, state as prompt tokens, overfit (full and LoRA), cached sampling, the
openpi π0.5 release key names, and the real-size build."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vla.config import Config, build
from vla.models.pi05 import AdaRMSNorm, discretize_state

from ..conftest import REPO
from .conftest import (ACTION_DIM, CHUNK, RELEASE_WIDTH, STATE_DIM, TINY_EXPERT, TINY_VLM, make_batch,
                       padded_pi0_cfg, tiny_pi0_cfg)
from .openpi_release import EXPERT_LM_HEAD, TIED_EMBED, write_release
from .test_pi0 import _overfit

PI05_FULL = REPO / "configs/pi05/pi05_paligemma_libero_10_full_finetune_pytorch.py"
PI05_TINY = REPO / "configs/pi05/pi05_paligemma_libero_10_full_finetune_tiny.py"
W = TINY_EXPERT["hidden_size"]


def tiny_pi05_cfg(**overrides) -> dict:
    cfg = tiny_pi0_cfg(type="PI05FlowMatching")
    cfg["action_time_mlp_in"] = dict(type="LinearProjector", in_dim=W, out_dim=W)
    cfg.update(overrides)
    return cfg


def _randomize_adarms(model) -> None:
    """adaRMS starts at zero (adaLN-Zero), which hides the expert; give it weights so tests can see it."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, AdaRMSNorm):
                m.dense.weight.copy_(torch.randn(m.dense.weight.shape, generator=g) * 0.2)
                m.dense.bias.copy_(torch.randn(m.dense.bias.shape, generator=g) * 0.2)


def test_discretize_state_matches_openpi_digitize():
    state = torch.tensor([[-1.5, -1.0, -0.999, 0.0, 0.3, 0.9999, 1.0, 2.0]])
    expected = np.digitize(np.clip(state.numpy(), -1, 1), bins=np.linspace(-1, 1, 257)[:-1]) - 1
    assert discretize_state(state, 256).tolist() == expected.tolist()


def test_expert_norms_are_adaptive_and_state_is_in_the_prompt():
    torch.manual_seed(0)
    model = build(tiny_pi05_cfg())
    names = [n for n, _ in model.named_parameters()]
    assert "llm_expert.llm.model.layers.0.input_layernorm.dense.weight" in names
    assert "llm_expert.llm.model.norm.dense.bias" in names
    assert not any(n.startswith("state_proj") or (n.endswith("layernorm.weight") and n.startswith("llm_expert"))
                   for n in names)
    _randomize_adarms(model)
    model.eval()
    batch = make_batch(batch_size=1)
    ids, valid = model._lang_tokens(batch)
    assert ids.shape[1] == batch["lang_tokens"].shape[1] + STATE_DIM and bool(valid[:, -STATE_DIM:].all())
    assert int(ids[:, -STATE_DIM:].min()) >= model.state_token_offset
    noise = torch.randn(1, CHUNK, ACTION_DIM)
    with torch.no_grad():
        a = model.sample_actions(batch, num_steps=2, noise=noise)
        batch["states"] = -batch["states"]
        b = model.sample_actions(batch, num_steps=2, noise=noise)
    assert (a - b).abs().max() > 1e-4  # the state reaches the actions only through the prompt tokens


def test_time_reaches_the_expert_through_adarms_only():
    torch.manual_seed(0)
    model = build(tiny_pi05_cfg()).eval()
    _randomize_adarms(model)
    batch, x = make_batch(batch_size=1), torch.randn(1, CHUNK, ACTION_DIM)
    tokens, cond = model.embed_actions(x, torch.tensor([0.2]))
    tokens2, cond2 = model.embed_actions(x, torch.tensor([0.9]))
    assert torch.equal(tokens, tokens2) and not torch.allclose(cond, cond2)
    with torch.no_grad():
        v1, v2 = model.velocity(batch, x, torch.tensor([0.2])), model.velocity(batch, x, torch.tensor([0.9]))
    assert (v1 - v2).abs().max() > 1e-4


def test_cached_sampling_equals_joint_forward():
    torch.manual_seed(0)
    model = build(tiny_pi05_cfg()).eval()
    _randomize_adarms(model)
    batch = make_batch(batch_size=2)
    noise = torch.randn(2, CHUNK, ACTION_DIM)
    with torch.no_grad():
        v = model.velocity(batch, noise, torch.ones(2))
        x = model.sample_actions(batch, num_steps=1, noise=noise)
    assert v.abs().max() > 1e-3
    torch.testing.assert_close(x, noise - v, atol=1e-5, rtol=1e-5)


def test_tiny_config_overfits_full_and_lora():
    cfg = Config.fromfile(PI05_TINY)["model"]
    batch = make_batch(batch_size=2)
    size = cfg["vlm_backbone"]["vlm_config"]["vision_config"]["image_size"]
    batch["images"] = torch.randn(2, 2, 3, size, size, generator=torch.Generator().manual_seed(5))
    batch["actions"] = torch.randn(2, 10, 14, generator=torch.Generator().manual_seed(1))
    batch["action_masks"] = torch.ones(2, 10, 14, dtype=torch.bool)
    torch.manual_seed(0)
    first, last = _overfit(build(cfg), batch, steps=40, lr=3e-3, chunk=10)
    assert last < 0.3 * first, (first, last)
    lora = dict(cfg, use_lora=True, lora_rank=8, freeze_vlm_backbone=True, freeze_llm_expert=True,
                lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "action_in_proj.projector",
                                     "action_out_proj.projector"])
    torch.manual_seed(0)
    model = build(lora)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(".lora_" in n or n.startswith(("action_time_mlp_in.", "action_time_mlp_out.")) for n in trainable)
    assert not any("dense" in n for n in trainable)  # adaRMS belongs to the frozen expert
    first, last = _overfit(model, batch, steps=40, lr=5e-3, chunk=10)
    assert last < 0.6 * first, (first, last)


@pytest.mark.parametrize("layout", ["openpi", "lerobot"])
def test_openpi_pi05_release_loads_in_both_layouts(tmp_path, layout):
    path = tmp_path / "model.safetensors"
    tensors = write_release(path, TINY_VLM, TINY_EXPERT, pi05=True, layout=layout)
    mapping = Config.fromfile(PI05_FULL)["model"]["name_mapping"]
    model = build(padded_pi0_cfg(pi05=True, pretrained_name_or_path=str(path), name_mapping=mapping))
    report = model.load_pretrained()
    assert (report.missing, report.unexpected, report.mismatched) == ([], [], [])
    assert set(report.ignored) == {"model." + EXPERT_LM_HEAD}
    state = model.state_dict()
    assert torch.equal(state["llm_expert.llm.model.layers.1.post_attention_layernorm.dense.weight"],
                       tensors["paligemma_with_expert.gemma_expert.model.layers.1.post_attention_layernorm"
                               ".dense.weight"])
    assert torch.equal(state["vlm_backbone.vlm.model.language_model.embed_tokens.weight"], tensors[TIED_EMBED])
    assert torch.equal(model.action_time_mlp_in.projector.weight, tensors["time_mlp_in.weight"])
    assert model.action_in_proj.projector.weight.shape[1] == RELEASE_WIDTH


def test_padded_state_gives_one_prompt_token_per_padded_dim():
    """openpi's π0.5 discretises the state padded to 32, the zero padding included (bin 128)."""
    model = build(padded_pi0_cfg(pi05=True)).eval()
    batch = make_batch()
    ids, valid = model._lang_tokens(batch)
    state_ids = ids[:, -RELEASE_WIDTH:] - model.state_token_offset
    assert ids.shape[1] == batch["lang_tokens"].shape[1] + RELEASE_WIDTH and bool(valid[:, -RELEASE_WIDTH:].all())
    assert torch.equal(state_ids[:, :STATE_DIM], discretize_state(batch["states"], 256))
    assert bool((state_ids[:, STATE_DIM:] == 128).all())
    assert model.predict_action(batch).shape == (2, CHUNK, ACTION_DIM)


def test_real_size_pi05_builds_on_meta_with_published_size():
    """π0.5 keeps π0's PaliGemma-3B (2.92B) and gemma_300m expert (openpi models/gemma.py: "311M params");
    openpi's π0.5 gives each of the expert's 2·18 + 1 RMSNorms a Dense(width -> 3·width) (adarms_cond_dim =
    width) in place of its scale vector."""
    cfg = Config.fromfile(PI05_FULL)["model"]
    with torch.device("meta"):
        model = build(cfg)
    width, norms = 1024, 2 * 18 + 1
    expected_expert = 311_464_960 - norms * width + norms * (width * 3 * width + 3 * width)
    total = sum(p.numel() for p in model.parameters())
    expert = sum(p.numel() for p in model.llm_expert.parameters())
    print(f"pi05 real size: total {total:,} expert {expert:,}")
    assert expert == expected_expert
    assert abs(total - (2.92e9 + expected_expert)) / total < 0.005
    assert (model.state_dim, model.action_dim, model.chunk_length) == (8, 7, 10)


def test_bad_pi05_config_is_named():
    from vla.config import ConfigError

    cfg = tiny_pi05_cfg()
    cfg["action_time_mlp_in"] = dict(type="LinearProjector", in_dim=2 * W, out_dim=W)  # the guide's (π0's) block
    with pytest.raises(ConfigError, match=rf"write action_time_mlp_in=dict\(type='LinearProjector', in_dim={W}, "
                                          rf"out_dim={W}\)"):
        build(cfg)
    cfg = tiny_pi05_cfg(name_mapping={"action_time_mlp_in.projector": "model.action_time_mlp_in"})
    with pytest.raises(ConfigError, match="write 'action_time_mlp_in.projector': 'model.time_mlp_in'"):
        build(cfg)
    cfg = tiny_pi05_cfg()
    del cfg["state_proj"]
    with pytest.raises(ConfigError, match="state_dim"):
        build(cfg)
