"""π0: the tiny configs build and train fast, loss falls on a fixed batch (full and LoRA), LoRA trains only
adapters + unfrozen projectors, sampling reuses the prefix cache exactly, bad input is named."""
from __future__ import annotations

import pytest
import torch

from vla.config import Config, build
from vla.models.lora import merge_lora

from ..conftest import REPO
from .conftest import ACTION_DIM, CHUNK, make_batch, tiny_pi0_cfg

TINY_FULL = REPO / "configs/pi0/pi0_paligemma_libero_10_full_finetune_tiny.py"
TINY_LORA = REPO / "configs/pi0/pi0_paligemma_libero_10_lora_finetune_tiny.py"


def _overfit(model, batch, steps: int, lr: float, chunk: int = CHUNK) -> tuple[float, float]:
    """First and last loss of `steps` AdamW steps with fixed noise and time (a deterministic objective)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    width = getattr(model, "max_action_dim", ACTION_DIM)  # the flow runs at the model-internal width
    noise = torch.randn(batch["actions"].shape[0], chunk, width, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.3, 0.7])
    losses = []
    for _ in range(steps):
        loss = model(dict(batch, noise=noise, time=t))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses[0], losses[-1]


def _tiny_batch_for(cfg) -> dict:
    vision = cfg["model"]["vlm_backbone"]["vlm_config"]["vision_config"]
    batch = make_batch(batch_size=2)
    size = vision["image_size"]
    batch["images"] = torch.randn(2, 2, 3, size, size, generator=torch.Generator().manual_seed(5))
    return batch


def test_tiny_config_builds_and_trains():
    cfg = Config.fromfile(TINY_FULL)
    torch.manual_seed(0)
    model = build(cfg["model"])
    assert (model.action_dim, model.state_dim, model.chunk_length) == (7, 8, 10)
    batch = _tiny_batch_for(cfg)
    batch["actions"] = torch.randn(2, 10, 14)
    batch["action_masks"] = torch.ones(2, 10, 14, dtype=torch.bool)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    for _ in range(2):
        opt.zero_grad()
        loss = model(batch)["loss"]
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert len(moved) == len(before), f"parameters that never moved: {sorted(set(before) - set(moved))[:5]}"
    actions = model.predict_action(batch)
    assert actions.shape == (2, 10, 7) and torch.isfinite(actions).all()


def test_full_finetune_overfits_fixed_batch():
    torch.manual_seed(0)
    model = build(tiny_pi0_cfg())
    first, last = _overfit(model, make_batch(), steps=40, lr=3e-3)
    assert last < 0.2 * first, (first, last)


def test_lora_trains_only_adapters_and_unfrozen_projectors_and_overfits():
    cfg = Config.fromfile(TINY_LORA)
    torch.manual_seed(0)
    model = build(cfg["model"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "nothing to train"
    for name in trainable:
        is_adapter = ".lora_A." in name or ".lora_B." in name
        is_free_projector = name.split(".")[0] in ("action_time_mlp_in", "action_time_mlp_out")
        assert is_adapter or is_free_projector, name
    # adapters reach the attention of both stacks and the three targeted projectors
    for part in ("vlm_backbone.vlm.model.language_model.layers.0.self_attn.q_proj.lora_A",
                 "llm_expert.llm.model.layers.1.self_attn.o_proj.lora_B",
                 "state_proj.projector.lora_A", "action_in_proj.projector.lora_A", "action_out_proj.projector.lora_B",
                 "action_time_mlp_in.projector.weight"):
        assert any(n.startswith(part) for n in trainable), part
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    batch = _tiny_batch_for(cfg)
    batch["actions"] = torch.randn(2, 10, 14, generator=torch.Generator().manual_seed(1))
    batch["action_masks"] = torch.ones(2, 10, 14, dtype=torch.bool)
    first, last = _overfit(model, batch, steps=40, lr=5e-3, chunk=10)
    assert last < 0.5 * first, (first, last)
    for name, p in model.named_parameters():
        if name in frozen_before:
            assert torch.equal(p, frozen_before[name]), f"frozen {name} changed"
    # merging for serving keeps the function and restores plain key names
    model.eval()
    noise = torch.randn(2, 10, model.max_action_dim, generator=torch.Generator().manual_seed(2))
    before = model.sample_actions(batch, num_steps=2, noise=noise)
    merge_lora(model)
    assert not any("lora_" in k or "base_layer" in k for k in model.state_dict())
    torch.testing.assert_close(model.sample_actions(batch, num_steps=2, noise=noise), before, atol=1e-5, rtol=1e-4)


def test_cached_sampling_equals_joint_forward_with_padding():
    """One Euler step from the prefix/state cache equals x - v from the uncached joint forward."""
    torch.manual_seed(0)
    model = build(tiny_pi0_cfg()).eval()
    batch = make_batch(batch_size=3, lang_len=7)
    batch["img_masks"][1, 1] = False  # a missing wrist camera
    noise = torch.randn(3, CHUNK, ACTION_DIM)
    with torch.no_grad():
        v = model.velocity(batch, noise, torch.ones(3))
        x = model.sample_actions(batch, num_steps=1, noise=noise)
    torch.testing.assert_close(x, noise - v, atol=1e-5, rtol=1e-5)


def test_padding_does_not_leak():
    """Padded prompt tokens and masked cameras do not change the actions."""
    torch.manual_seed(0)
    model = build(tiny_pi0_cfg()).eval()
    batch = make_batch(batch_size=1, lang_len=6, pad_last_prompt=True)
    other = {k: v.clone() for k, v in batch.items()}
    other["lang_tokens"][0, -2:] = 77  # change only the padded positions
    batch["img_masks"][0, 1] = other["img_masks"][0, 1] = False
    other["images"][0, 1] = 3.0  # and the masked camera's pixels
    noise = torch.randn(1, CHUNK, ACTION_DIM)
    with torch.no_grad():
        torch.testing.assert_close(model.sample_actions(batch, num_steps=2, noise=noise),
                                   model.sample_actions(other, num_steps=2, noise=noise))


def test_masked_action_dims_do_not_count():
    torch.manual_seed(0)
    model = build(tiny_pi0_cfg())
    batch = make_batch()
    noise, t = torch.randn(2, CHUNK, ACTION_DIM), torch.tensor([0.5, 0.5])
    loss = model(dict(batch, noise=noise, time=t))["loss"]
    batch["actions"][..., ACTION_DIM:] = 100.0  # padded dims beyond the model's action_dim
    batch["actions"][1, -1] = torch.where(batch["action_masks"][1, -1], batch["actions"][1, -1], 100.0)
    assert torch.equal(model(dict(batch, noise=noise, time=t))["loss"], loss)
    batch["action_masks"][0, 0] = False  # a step past the episode end
    assert not torch.equal(model(dict(batch, noise=noise, time=t))["loss"], loss)


def test_bad_config_and_input_are_named():
    from vla.config import ConfigError

    with pytest.raises(ConfigError, match="proj_width"):
        build(tiny_pi0_cfg(proj_width=24))
    cfg = tiny_pi0_cfg()
    cfg["action_time_mlp_in"] = dict(type="LinearProjector", in_dim=16, out_dim=16)
    with pytest.raises(ConfigError, match="action_time_mlp_in"):
        build(cfg)
    model = build(tiny_pi0_cfg())
    batch = make_batch()
    batch["actions"] = batch["actions"][:, :2]
    with pytest.raises(ValueError, match=r"batch\['actions'\]"):
        model(batch)
    del batch["states"]
    with pytest.raises(ValueError, match="PI0FlowMatching: the batch has no 'states'"):
        model.predict_action(batch)


def test_cached_inference_weights_follow_updates():
    """sample_actions caches per-layer weights; an optimizer step or load_state_dict must show up."""
    torch.manual_seed(0)
    model = build(tiny_pi0_cfg()).eval()
    other = build(tiny_pi0_cfg()).eval()
    batch, noise = make_batch(batch_size=1), torch.randn(1, CHUNK, ACTION_DIM)
    with torch.no_grad():
        model.sample_actions(batch, num_steps=2, noise=noise)  # fills the cache
        model.load_state_dict(other.state_dict())
        torch.testing.assert_close(model.sample_actions(batch, num_steps=2, noise=noise),
                                   other.sample_actions(batch, num_steps=2, noise=noise))
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(make_batch())["loss"].backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        x = model.sample_actions(batch, num_steps=1, noise=noise)
        torch.testing.assert_close(x, noise - model.velocity(batch, noise, torch.ones(1)), atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients(monkeypatch):
    import torch.utils.checkpoint as ckpt_mod

    calls = []
    real = ckpt_mod.checkpoint
    monkeypatch.setattr(ckpt_mod, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(0)
    plain, ckpt = build(tiny_pi0_cfg()), build(tiny_pi0_cfg())
    ckpt.load_state_dict(plain.state_dict())
    ckpt.gradient_checkpointing_enable()
    batch, noise, t = make_batch(), torch.randn(2, CHUNK, ACTION_DIM), torch.tensor([0.4, 0.6])
    for model in (plain, ckpt):
        model(dict(batch, noise=noise, time=t))["loss"].backward()
    assert len(calls) >= 2  # both shared-attention layer pairs were checkpointed
    grads = dict(plain.named_parameters())
    for name, p in ckpt.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(p.grad, grads[name].grad, atol=1e-6, rtol=1e-5)
