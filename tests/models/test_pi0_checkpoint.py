"""π0 checkpoints: safetensors files written as openpi's converter and LeRobot write them (scaled-down shapes,
tied embedding, 32-wide projectors) load through the guide config's name_mapping with nothing missing or
unexpected; strict loading names what is wrong; the real-size configs build on the meta device with
the published parameter counts."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vla.config import Config, build
from vla.models.loading import CheckpointMismatchError

from ..conftest import REPO
from .conftest import RELEASE_WIDTH, TINY_EXPERT, TINY_VLM, padded_pi0_cfg, tiny_pi0_cfg
from .openpi_release import EXPERT_LM_HEAD, TIED_EMBED, TIED_LM_HEAD, write_release

PI0_FULL = REPO / "configs/pi0/pi0_paligemma_libero_10_full_finetune_pytorch.py"
PI0_LORA = REPO / "configs/pi0/pi0_paligemma_libero_10_lora_finetune.py"


def _layout_of(path: Path) -> set[str]:
    with safe_open(str(path), "pt") as f:
        return set(f.keys())


def _seed_cfg(config: Path, path: Path, **overrides) -> dict:
    seed_model = Config.fromfile(config)["model"]
    cfg = padded_pi0_cfg(pretrained_name_or_path=str(path), name_mapping=seed_model["name_mapping"], **overrides)
    for key in ("use_lora", "lora_rank", "lora_target_modules", "freeze_vlm_backbone", "freeze_llm_expert"):
        if key in seed_model:
            cfg[key] = seed_model[key]
    return cfg


@pytest.mark.parametrize("layout", ["openpi", "lerobot"])
@pytest.mark.parametrize("config", [PI0_FULL, PI0_LORA], ids=["full", "lora"])
def test_release_loads_in_both_layouts_with_seed_name_mapping(tmp_path, config, layout):
    path = tmp_path / "model.safetensors"
    tensors = write_release(path, TINY_VLM, TINY_EXPERT, layout=layout)
    keys, prefix = _layout_of(path), "model." if layout == "lerobot" else ""
    # what save_model wrote: the tied embedding once, under its LM-head name; the padded 32-wide projectors
    assert prefix + TIED_LM_HEAD in keys and prefix + TIED_EMBED not in keys
    assert all(k.startswith("model.") for k in keys) == (layout == "lerobot")
    cfg = _seed_cfg(config, path)
    model = build(cfg)
    report = model.load_pretrained()
    assert (report.missing, report.unexpected, report.mismatched, report.allowed) == ([], [], [], [])
    assert set(report.ignored) == {"model." + EXPERT_LM_HEAD}  # named as the guide's name_mapping names keys
    state = model.state_dict()
    assert report.loaded == len([k for k in state if ".lora_" not in k])
    base = ".base_layer" if cfg.get("use_lora") else ""
    checks = {
        "vlm_backbone.vlm.model.language_model.embed_tokens.weight": TIED_EMBED,
        f"vlm_backbone.vlm.model.language_model.layers.1.self_attn.k_proj{base}.weight":
            "paligemma_with_expert.paligemma.model.language_model.layers.1.self_attn.k_proj.weight",
        "vlm_backbone.vlm.model.vision_tower.vision_model.encoder.layers.0.mlp.fc2.bias":
            "paligemma_with_expert.paligemma.model.vision_tower.vision_model.encoder.layers.0.mlp.fc2.bias",
        "llm_expert.llm.model.norm.weight": "paligemma_with_expert.gemma_expert.model.norm.weight",
        f"state_proj.projector{base}.weight": "state_proj.weight",
        f"action_out_proj.projector{base}.weight": "action_out_proj.weight",
        "action_time_mlp_out.projector.bias": "action_time_mlp_out.bias",
    }
    for ours, theirs in checks.items():
        assert torch.equal(state[ours], tensors[theirs]), ours
    assert state[f"state_proj.projector{base}.weight"].shape == (TINY_EXPERT["hidden_size"], RELEASE_WIDTH)


def test_strict_by_default_names_what_is_wrong_and_says_what_to_write(tmp_path):
    path = tmp_path / "model.safetensors"
    write_release(path, TINY_VLM, TINY_EXPERT)
    # the guide's literal projectors (8 / 7 wide) against a release that pads to 32
    cfg = _seed_cfg(PI0_FULL, path)
    for key in ("state_dim", "action_dim", "max_state_dim", "max_action_dim", "state_proj", "action_in_proj",
                "action_out_proj"):
        cfg[key] = tiny_pi0_cfg()[key] if key in tiny_pi0_cfg() else None
    model = build(cfg)
    before = model.state_proj.projector.weight.clone()
    with pytest.raises(CheckpointMismatchError) as err:
        model.load_pretrained()
    msg = str(err.value)
    assert "state_proj.projector.weight checkpoint (16, 32) vs model (16, 8)" in msg
    assert "max_state_dim=32" in msg and "max_action_dim=32" in msg and "allow_missing_keys" in msg
    assert torch.equal(model.state_proj.projector.weight, before)  # nothing was loaded


def test_allow_list_leaves_a_new_head_at_initialisation(tmp_path):
    path = tmp_path / "model.safetensors"
    tensors = write_release(path, TINY_VLM, TINY_EXPERT)
    cfg = _seed_cfg(PI0_FULL, path, action_dim=5, max_action_dim=16,
                    action_in_proj=dict(type="LinearProjector", in_dim=16, out_dim=16),
                    action_out_proj=dict(type="LinearProjector", in_dim=16, out_dim=16))
    with pytest.raises(CheckpointMismatchError, match="action_in_proj.projector.weight"):
        build(cfg).load_pretrained()
    cfg["allow_missing_keys"] = ["action_in_proj", "action_out_proj.projector"]
    model = build(cfg)
    fresh = model.action_out_proj.projector.weight.clone()
    report = model.load_pretrained()
    assert sorted(report.allowed) == ["action_in_proj.projector.weight", "action_out_proj.projector.bias",
                                      "action_out_proj.projector.weight"]
    assert report.missing == [] and report.mismatched == []
    assert torch.equal(model.action_out_proj.projector.weight, fresh)
    assert torch.equal(model.state_proj.projector.weight, tensors["state_proj.weight"])


def test_a_missing_tensor_is_an_error(tmp_path):
    path = tmp_path / "model.safetensors"
    tensors = write_release(path, TINY_VLM, TINY_EXPERT, layout="lerobot")
    sd = {"model." + k: v for k, v in tensors.items() if k != TIED_LM_HEAD
          and not k.endswith("gemma_expert.model.layers.0.mlp.up_proj.weight")}
    save_file(sd, str(path))
    with pytest.raises(CheckpointMismatchError, match="llm_expert.llm.model.layers.0.mlp.up_proj.weight"):
        build(_seed_cfg(PI0_FULL, path)).load_pretrained()


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_real_size_pi0_builds_on_meta_with_published_size():
    """Published sizes: openpi `models/gemma.py` gemma_300m "311M params" (the action expert); the π0 paper
    (Black et al. 2024, arXiv:2410.24164, §IV) "3.3 billion parameters" in total, of which the PaliGemma-3B
    VLM (Beyer et al. 2024, arXiv:2407.07726: SigLIP-So400m + Gemma-2B, 2.92B without LM head) is the rest."""
    cfg = Config.fromfile(PI0_FULL)["model"]
    with torch.device("meta"):
        model = build(cfg)
    total, vlm, expert = _count(model), _count(model.vlm_backbone), _count(model.llm_expert)
    print(f"pi0 real size: total {total:,} vlm {vlm:,} expert {expert:,}")
    assert abs(expert - 311e6) / 311e6 < 0.005
    assert abs(vlm - 2.92e9) / 2.92e9 < 0.005
    assert abs(total - 3.3e9) / 3.3e9 < 0.03  # "3.3B" as rounded in the paper
    assert model.action_dim == 7 and model.state_dim == 8 and model.chunk_length == 10
    assert model.max_action_dim == 32 and model.max_state_dim == 32  # openpi's release widths


def test_real_size_lora_config_trains_a_small_fraction():
    cfg = Config.fromfile(PI0_LORA)["model"]
    with torch.device("meta"):
        model = build(cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"pi0 LoRA rank 32: trainable {trainable:,} of {_count(model):,}")
    assert 0 < trainable < 0.05 * _count(model)
