"""GR00T-N1.5 (`LlavaVLA` + `EagleBackbone` + `FlowMatchingHead`): real-size build and parameter count,
release checkpoint names through the guide's name_mapping, overfitting with and without LoRA, sampling."""
from __future__ import annotations

import copy

import pytest
import torch

from vla.config import Config, build
from vla.models.gr00t import EagleBackbone, FlowMatchingHead, LlavaVLA
from vla.models.gr00t.eagle import pixel_shuffle
from vla.models.loading import CheckpointMismatchError
from vla.models.lora import trainable_names

from ..conftest import REPO
from .gr00t_release import ReleaseDims, release_shapes, release_tensors

REAL = REPO / "configs/gr00t/gr00t_eagle_3b_libero_10_full_train.py"
TINY = REPO / "configs/gr00t/gr00t_eagle_3b_libero_10_full_train_tiny.py"
TINY_IMAGE_TOKEN, TOKENS_PER_IMAGE, NCAM = 4, 4, 2
# The synthetic release checkpoint at the tiny config's widths; state/action at the release's padded
# widths (64/32), wider than the data's 8/7.
TINY_RELEASE = ReleaseDims(vit_width=32, vit_mlp=64, vit_layers=2, patch=8, image=32, projector_in=128,
                           llm_width=64, llm_mlp=128, llm_layers=2, llm_heads=2, llm_kv_heads=1, llm_head_dim=32,
                           vocab=512, max_state_dim=64, max_action_dim=32, hidden_size=32, input_embedding_dim=64,
                           dit_layers=2, vl_layers=1, vl_width=64, future_tokens=4, max_seq_len=16)


def tiny_model_cfg(**overrides) -> dict:
    cfg = copy.deepcopy(Config.fromfile(TINY).model)
    cfg.update(overrides)
    return cfg


def make_batch(b: int = 2, length: int = 24, seed: int = 0, pad: tuple[int, ...] = ()) -> dict:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(5, 439, (b, length), generator=g)
    tokens[:, 0] = 1
    tokens[:, 1:1 + NCAM * TOKENS_PER_IMAGE] = TINY_IMAGE_TOKEN
    masks = torch.ones(b, length, dtype=torch.bool)
    for i, n in enumerate(pad):  # right padding, as the tokenizer pads
        masks[i, length - n:] = False
        tokens[i, length - n:] = 0
    actions = torch.zeros(b, 10, 14)
    actions[..., :7] = torch.randn(b, 10, 7, generator=g)
    action_masks = torch.zeros(b, 10, 14, dtype=torch.bool)
    action_masks[..., :7] = True
    return dict(images=torch.randn(b, NCAM, 3, 32, 32, generator=g), img_masks=torch.ones(b, NCAM, dtype=torch.bool),
                lang_tokens=tokens, lang_masks=masks, states=torch.randn(b, 8, generator=g), actions=actions,
                action_masks=action_masks, embodiment_ids=torch.full((b,), 31))


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---- real size ----------------------------------------------------------------------------------------------

def test_real_config_builds_on_meta_with_the_published_size():
    """Published size: nvidia/GR00T-N1.5-3B on Hugging Face, safetensors metadata "2.72B params" (model card
    https://huggingface.co/nvidia/GR00T-N1.5-3B; "GR00T-N1.5-3B (2.7B parameters)" also in
    https://huggingface.co/Pushpakcc/gr00t-so100_dualcam-finetuned). The release pads state to 64 and
    actions to 32 and stores two modules GR00T never runs (Qwen3's LM head and SigLIP's pooling head),
    which we do not build; counting those back must give the published size."""
    cfg = Config.fromfile(REAL)
    with torch.device("meta"):
        model = build(cfg.model)
        release_head = build({**cfg.model["vla_head"], "state_dim": 64, "action_dim": 32})
    ours = count(model)
    d = ReleaseDims()
    shapes = release_shapes(d)
    unused = sum(torch.Size(s).numel() for k, s in shapes.items()
                 if k.endswith("lm_head.weight") or ".vision_model.head." in k)
    release_total = ours - count(model.vla_head) + count(release_head) + unused
    print(f"GR00T-N1.5 (guide config, state 8 / action 7): {ours:,} parameters; "
          f"release layout: {release_total:,} (published 2.72B)")
    assert abs(release_total - 2.72e9) / 2.72e9 < 0.005
    # ... and the same count the release's own tensor list gives.
    assert release_total == sum(torch.Size(s).numel() for s in shapes.values())
    assert (model.action_dim, model.state_dim, model.chunk_length) == (7, 8, 10)
    assert model.vlm_backbone.tokens_per_image == 256  # 224/14 squared, no pixel shuffle
    assert len(model.vlm_backbone.vlm.language_model.model.layers) == 12  # select_layer of 28
    assert len(model.vla_head.model.transformer_blocks) == 16


def test_release_checkpoint_names_and_full_shapes_fit_the_real_model(monkeypatch):
    """Every tensor of the released layout, at full size, maps onto the real-size model (meta) by the guide's
    name_mapping with zero missing keys and no shape mismatch (strict mode)."""
    import vla.models.gr00t.llava_vla as llava

    cfg = Config.fromfile(REAL)
    with torch.device("meta"):
        model = build({**cfg.model, "strict_mapping": True})
    state = release_tensors(ReleaseDims(), device="meta")  # meta tensors cannot go through a file
    monkeypatch.setattr(llava, "read_pretrained", lambda path: dict(state))
    report = model.load_pretrained()
    assert report.ok, report.summary()
    assert report.loaded == len(model.state_dict())


# ---- checkpoint loading ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def release_dir(tmp_path_factory):
    """A sharded HF-style checkpoint directory (index + 2 shards) with the release's key names, tiny shapes."""
    import json

    from safetensors.torch import save_file

    state = release_tensors(TINY_RELEASE, seed=3)
    root = tmp_path_factory.mktemp("GR00T-N1.5-tiny")
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for file, keys in shards.items():
        save_file({k: state[k].contiguous() for k in keys}, str(root / file))
        weight_map.update({k: file for k in keys})
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return root, state


def test_release_key_names_load_through_the_seed_name_mapping(release_dir):
    root, state = release_dir
    model = build(tiny_model_cfg(pretrained_name_or_path=str(root), strict_mapping=True))
    report = model.load_pretrained()
    assert report.missing == [] and report.mismatched == [] and report.unexpected == []
    assert report.loaded == len(model.state_dict())
    own = model.state_dict()
    torch.testing.assert_close(own["vlm_backbone.vlm.language_model.model.layers.1.self_attn.o_proj.weight"],
                               state["backbone.eagle_model.language_model.model.layers.1.self_attn.o_proj.weight"])
    torch.testing.assert_close(own["vla_head.model.transformer_blocks.0.attn1.to_out.0.weight"],
                               state["action_head.model.transformer_blocks.0.attn1.to_out.0.weight"])
    torch.testing.assert_close(own["vlm_backbone.vlm.vision_model.vision_model.encoder.layers.1.mlp.fc2.bias"],
                               state["backbone.eagle_model.vision_model.vision_model.encoder.layers.1.mlp.fc2.bias"])


def _cat_linear(state: dict, name: str, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return torch.bmm(x, state[f"{name}.W"][ids]) + state[f"{name}.b"][ids][:, None]


def _release_velocity(head, state: dict, x: torch.Tensor, bucket: torch.Tensor, state_features, context, mask, ids):
    """The release's FlowmatchingActionHead step at its padded widths, its category-specific layers computed
    here from the checkpoint tensors (the DiT, validated against diffusers elsewhere, is ours)."""
    h = "action_head"
    a = _cat_linear(state, f"{h}.action_encoder.W1", x, ids)
    half = a.shape[-1] // 2  # SinusoidalPositionalEncoding: exp(-i·ln(1e4)/half), [sin | cos]
    freqs = torch.exp(-torch.arange(half, dtype=torch.float32) * (torch.log(torch.tensor(10000.0)) / half))
    args = bucket.float()[:, None, None] * freqs
    tau = torch.cat([args.sin(), args.cos()], -1).expand(-1, x.shape[1], -1)
    z = _cat_linear(state, f"{h}.action_encoder.W2", torch.cat([a, tau], -1), ids)
    z = _cat_linear(state, f"{h}.action_encoder.W3", z * torch.sigmoid(z), ids)
    z = z + state[f"{h}.position_embedding.weight"][: x.shape[1]][None]
    future = state[f"{h}.future_tokens.weight"][None].expand(x.shape[0], -1, -1)
    out = head.model(torch.cat([state_features, future, z], 1), context, bucket, encoder_attention_mask=mask)
    hidden = torch.relu(_cat_linear(state, f"{h}.action_decoder.layer1", out, ids))
    return _cat_linear(state, f"{h}.action_decoder.layer2", hidden, ids)[:, -x.shape[1]:]


def test_padded_release_widths_compute_as_the_release(release_dir):
    """Same weights, same 32-wide noise: our velocity and our 4-step chunk equal the release's computation at
    its padded widths (state zero-padded to 64, every padded action dim integrated), to float rounding."""
    root, state = release_dir
    model = build(tiny_model_cfg(pretrained_name_or_path=str(root))).eval()
    report = model.load_pretrained()
    assert report.ok and (model.max_state_dim, model.max_action_dim) == (64, 32)
    head, batch = model.vla_head, make_batch()
    ids = batch["embodiment_ids"]
    g = torch.Generator().manual_seed(7)
    noise = torch.randn(2, 10, 32, generator=g)
    with torch.no_grad():
        features, mask = model._context(batch)
        context = head.encode_context(features, mask)
        state64 = torch.nn.functional.pad(batch["states"], (0, 56))[:, None]
        hidden = torch.relu(_cat_linear(state, "action_head.state_encoder.layer1", state64, ids))
        state_features = _cat_linear(state, "action_head.state_encoder.layer2", hidden, ids)
        x, steps = noise.clone(), head.num_inference_timesteps
        for step in range(steps):
            bucket = torch.full((2,), int(step / float(steps) * 1000), dtype=torch.long)
            x = x + _release_velocity(head, state, x, bucket, state_features, context, mask, ids) / steps
        got = model.predict_action(batch, noise=noise)
        # training: the loss over the 7 real dims of the release's velocity at t = 0.3 / 0.8
        t = torch.tensor([0.3, 0.8])
        actions = torch.nn.functional.pad(batch["actions"][..., :7], (0, 25))
        noisy = (1 - t[:, None, None]) * noise + t[:, None, None] * actions
        v = _release_velocity(head, state, noisy, (t * 1000).long(), state_features, context, mask, ids)
        ref_loss = ((v - (actions - noise))[..., :7] ** 2).mean()
        loss = model(dict(batch, noise=noise, time=t))["loss"]
    assert got.shape == (2, 10, 7)
    torch.testing.assert_close(got, x[..., :7], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    # the padded dims matter: zero noise there gives another chunk
    other = model.predict_action(batch, noise=torch.cat([noise[..., :7], torch.zeros(2, 10, 25)], -1))
    assert (other - got).abs().max() > 1e-4


def test_narrower_widths_than_the_release_are_refused_with_what_to_write(release_dir):
    root, _ = release_dir
    cfg = tiny_model_cfg(pretrained_name_or_path=str(root))
    cfg["vla_head"] = dict(cfg["vla_head"], max_state_dim=8, max_action_dim=7)
    with pytest.raises(CheckpointMismatchError, match="max_action_dim=32, max_state_dim=64"):
        build(cfg).load_pretrained()


def test_missing_release_tensor_is_reported_and_strict_mode_refuses(tmp_path, release_dir):
    from safetensors.torch import save_file

    _, state = release_dir
    partial = {k: v for k, v in state.items() if not k.startswith("action_head.future_tokens")}
    save_file(partial, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError, match="future_tokens"):  # strict by default
        build(tiny_model_cfg(pretrained_name_or_path=str(tmp_path))).load_pretrained()
    report = build(tiny_model_cfg(pretrained_name_or_path=str(tmp_path),
                                  allow_missing_keys=["vla_head.future_tokens"])).load_pretrained()
    assert report.ok and report.allowed == ["vla_head.future_tokens.weight"]
    report = build(tiny_model_cfg(pretrained_name_or_path=str(tmp_path), strict_mapping=False)).load_pretrained()
    assert report.missing == ["vla_head.future_tokens.weight"]


def test_load_pretrained_is_a_no_op_when_unset():
    assert build(tiny_model_cfg()).load_pretrained() is None


# ---- training ---------------------------------------------------------------------------------------------

def _fixed_flow(batch: dict, seed: int = 1) -> dict:
    """Pin noise and flow time so the loss is a deterministic function of the weights."""
    g = torch.Generator().manual_seed(seed)
    b = batch["states"].shape[0]
    return {**batch, "noise": torch.randn(b, 10, 32, generator=g), "time": torch.rand(b, generator=g)}


def _train(model: LlavaVLA, batch: dict, steps: int, lr: float) -> list[float]:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = model(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_full_training_overfits_a_fixed_batch():
    torch.manual_seed(0)
    model = build(tiny_model_cfg())
    losses = _train(model, _fixed_flow(make_batch()), steps=60, lr=1e-3)
    print(f"full fine-tune loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    assert losses[-1] < 0.2 * losses[0]


def test_lora_trains_only_adapters_and_projectors_and_overfits():
    torch.manual_seed(0)
    model = build(tiny_model_cfg(use_lora=True, lora_rank=8))
    names = trainable_names(model)
    projectors = model.projector_prefixes()
    assert projectors == ("vlm_backbone.vlm.mlp1", "vla_head.state_encoder", "vla_head.action_encoder",
                          "vla_head.action_decoder", "vla_head.position_embedding")
    adapters = [n for n in names if ".lora_" in n]
    others = [n for n in names if ".lora_" not in n]
    assert adapters and all(any(n.startswith(p + ".") for p in projectors) for n in others), others
    assert {n.split(".")[0] + "." + n.split(".")[1] for n in others} >= {"vla_head.state_encoder"}
    # adapters sit on SigLIP, Qwen3 and DiT attention alike
    assert any(".self_attn.out_proj.lora_A" in n for n in adapters)
    assert any(".self_attn.o_proj.lora_A" in n for n in adapters)
    assert any(".attn1.to_out.0.lora_A" in n for n in adapters)
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    losses = _train(model, _fixed_flow(make_batch()), steps=40, lr=1e-2)
    print(f"LoRA loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    assert losses[-1] < 0.5 * losses[0]
    for n, p in model.named_parameters():
        if n in frozen_before:
            assert torch.equal(p, frozen_before[n]), f"frozen {n} changed"


def test_lora_with_frozen_projectors_trains_adapters_only():
    model = build(tiny_model_cfg(use_lora=True, lora_rank=4, freeze_projector=True))
    assert all(".lora_" in n for n in trainable_names(model))


def test_freeze_flags_without_lora():
    model = build(tiny_model_cfg(freeze_vlm_backbone=True, freeze_projector=True))
    names = trainable_names(model)
    assert not any(n.startswith("vlm_backbone.") for n in names)
    assert not any(n.startswith(("vla_head.state_encoder", "vla_head.action_encoder", "vla_head.action_decoder"))
                   for n in names)
    assert any(n.startswith("vla_head.model.") for n in names)  # the DiT still trains


# ---- sampling ---------------------------------------------------------------------------------------------

def test_predict_action_shape_and_determinism_with_fixed_noise():
    torch.manual_seed(0)
    model = build(tiny_model_cfg()).eval()
    batch = make_batch(b=3)
    noise = torch.randn(3, 10, 32)
    a = model.predict_action(batch, noise=noise)
    assert a.shape == (3, model.chunk_length, model.action_dim) == (3, 10, 7)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(model.predict_action(batch, noise=noise.clone()), a, rtol=0, atol=0)
    assert not torch.allclose(model.predict_action(batch, noise=torch.randn(3, 10, 32)), a)
    torch.manual_seed(5)
    first = model.predict_action(batch)        # without noise: drawn from the global RNG
    torch.manual_seed(5)
    torch.testing.assert_close(model.predict_action(batch), first)


def test_prediction_does_not_depend_on_batch_padding():
    torch.manual_seed(0)
    model = build(tiny_model_cfg()).eval()
    short = make_batch(b=1, length=20, seed=4)
    long = {k: v.clone() for k, v in short.items()}
    long["lang_tokens"] = torch.nn.functional.pad(short["lang_tokens"], (0, 9))
    long["lang_masks"] = torch.nn.functional.pad(short["lang_masks"], (0, 9), value=False)
    noise = torch.randn(1, 10, 32)
    torch.testing.assert_close(model.predict_action(long, noise=noise), model.predict_action(short, noise=noise),
                               rtol=1e-5, atol=1e-5)


def test_absent_camera_tokens_are_masked_from_the_head():
    model = build(tiny_model_cfg()).eval()
    batch = make_batch(b=1)
    batch["img_masks"] = torch.tensor([[True, False]])
    _, mask = model.vlm_backbone(batch["images"], batch["lang_tokens"], batch["lang_masks"], batch["img_masks"])
    image_slots = batch["lang_tokens"][0] == TINY_IMAGE_TOKEN
    assert mask[0][image_slots].tolist() == [True] * TOKENS_PER_IMAGE + [False] * TOKENS_PER_IMAGE
    assert mask[0][~image_slots].all()


# ---- building blocks and bad input ------------------------------------------------------------------------

def test_pixel_shuffle_groups_each_2x2_neighbourhood_into_channels():
    x = torch.randn(2, 4, 6, 3)  # [N, W, H, C]
    out = pixel_shuffle(x, 0.5)
    # Eagle/InternVL order: out[n, i, j] = concat over (di, dj) of x[n, 2i + di, 2j + dj]
    expect = x.reshape(2, 2, 2, 3, 2, 3).permute(0, 1, 3, 2, 4, 5).reshape(2, 2, 3, 12)
    torch.testing.assert_close(out, expect)


def test_head_rejects_inconsistent_widths():
    with pytest.raises(ValueError, match="input_embedding_dim"):
        FlowMatchingHead(state_dim=8, hidden_size=32, input_embedding_dim=48, action_dim=7, num_inference_timesteps=2,
                         traj_length=4, diffusion_model_cfg=dict(num_attention_heads=4, attention_head_dim=16,
                                                                 output_dim=32))


def test_wrong_number_of_image_tokens_names_the_fix():
    model = build(tiny_model_cfg())
    batch = make_batch()
    batch["lang_tokens"][:, 1] = 7  # one placeholder fewer
    with pytest.raises(ValueError, match="tokens_per_image"):
        model(batch)


def test_valid_action_dims_past_action_dim_are_refused():
    model = build(tiny_model_cfg())
    batch = make_batch()
    batch["action_masks"][..., 9] = True
    with pytest.raises(ValueError, match="action_dim=7"):
        model(batch)


def test_bad_embodiment_id_is_refused():
    model = build(tiny_model_cfg())
    batch = make_batch()
    batch["embodiment_ids"] = torch.tensor([31, 32])
    with pytest.raises(ValueError, match="embodiment_ids"):
        model(batch)


def test_unknown_vlm_path_is_an_error():
    from vla.errors import VLAError

    with pytest.raises(FileNotFoundError, match="vlm_path") as err:
        EagleBackbone(vlm_path="/nonexistent/eagle")
    assert isinstance(err.value, VLAError)    # vla-train prints it as one line


def test_gradient_checkpointing_keeps_loss_and_gradients():
    torch.manual_seed(0)
    model = build(tiny_model_cfg())
    batch = _fixed_flow(make_batch())

    def loss_and_grads():
        model.zero_grad()
        loss = model(batch)["loss"]
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    loss0, grads0 = loss_and_grads()
    model.gradient_checkpointing_enable()
    llm = model.vlm_backbone.vlm.language_model.model
    assert model.vla_head.model.gradient_checkpointing and getattr(llm, "is_activation_checkpointing", None)
    loss1, grads1 = loss_and_grads()
    torch.testing.assert_close(loss1, loss0)
    assert grads1.keys() == grads0.keys()
    for name in grads0:
        torch.testing.assert_close(grads1[name], grads0[name], rtol=1e-4, atol=1e-6, msg=name)


def test_fsdp_blocks_are_the_transformer_blocks():
    from trainer.parallelize import fsdp_blocks

    model = build(tiny_model_cfg())
    units = fsdp_blocks(model)
    assert len(units) == 2 + 2 + 2 + 1  # SigLIP layers, kept Qwen3 layers, DiT blocks, adapter blocks
    assert len({id(u) for u in units}) == len(units)
