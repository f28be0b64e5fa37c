"""π0 checkpoints: a safetensors file with the released openpi key names (scaled-down shapes) loads through
the seed config's name_mapping with zero missing keys; the real-size configs build on the meta device with
the published parameter counts."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vla.config import Config, build
from vla.models.loading import CheckpointMismatchError

from ..conftest import REPO
from .conftest import ACTION_DIM, STATE_DIM, TINY_EXPERT, TINY_VLM, tiny_pi0_cfg
from .openpi_release import UNUSED_LM_HEADS, openpi_keys

PI0_FULL = REPO / "configs/pi0/pi0_paligemma_libero_10_full_finetune_pytorch.py"
PI0_LORA = REPO / "configs/pi0/pi0_paligemma_libero_10_lora_finetune.py"


def _release_file(tmp_path, pi05: bool = False) -> tuple[Path, dict]:
    g = torch.Generator().manual_seed(0)
    tensors = {k: torch.randn(*shape, generator=g) for k, shape in
               openpi_keys(TINY_VLM, TINY_EXPERT, STATE_DIM, ACTION_DIM, pi05=pi05).items()}
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    return path, tensors


@pytest.mark.parametrize("config", [PI0_FULL, PI0_LORA], ids=["full", "lora"])
def test_openpi_release_loads_with_seed_name_mapping(tmp_path, config):
    path, tensors = _release_file(tmp_path)
    seed_model = Config.fromfile(config)["model"]
    cfg = tiny_pi0_cfg(pretrained_name_or_path=str(path), name_mapping=seed_model["name_mapping"])
    for key in ("use_lora", "lora_rank", "lora_target_modules", "freeze_vlm_backbone", "freeze_llm_expert"):
        if key in seed_model:
            cfg[key] = seed_model[key]
    model = build(cfg)
    report = model.load_pretrained()
    assert report.missing == [] and report.mismatched == []
    assert sorted(report.unexpected) == UNUSED_LM_HEADS
    state = model.state_dict()
    base = ".base_layer" if cfg.get("use_lora") else ""
    checks = {
        f"vlm_backbone.vlm.model.language_model.layers.1.self_attn.k_proj{base}.weight":
            "model.paligemma_with_expert.paligemma.model.language_model.layers.1.self_attn.k_proj.weight",
        "vlm_backbone.vlm.model.vision_tower.vision_model.encoder.layers.0.mlp.fc2.bias":
            "model.paligemma_with_expert.paligemma.model.vision_tower.vision_model.encoder.layers.0.mlp.fc2.bias",
        "llm_expert.llm.model.norm.weight": "model.paligemma_with_expert.gemma_expert.model.norm.weight",
        f"state_proj.projector{base}.weight": "model.state_proj.weight",
        "action_time_mlp_out.projector.bias": "model.action_time_mlp_out.bias",
    }
    for ours, theirs in checks.items():
        assert torch.equal(state[ours], tensors[theirs]), ours


def test_strict_loading_names_what_is_wrong(tmp_path):
    path, tensors = _release_file(tmp_path)
    del tensors["model.paligemma_with_expert.gemma_expert.model.layers.0.mlp.up_proj.weight"]
    tensors["model.state_proj.weight"] = torch.zeros(TINY_EXPERT["hidden_size"], 32)  # openpi pads state to 32
    save_file(tensors, str(path))
    mapping = Config.fromfile(PI0_FULL)["model"]["name_mapping"]
    model = build(tiny_pi0_cfg(pretrained_name_or_path=str(path), name_mapping=mapping, strict_loading=True))
    with pytest.raises(CheckpointMismatchError) as err:
        model.load_pretrained()
    msg = str(err.value)
    assert "llm_expert.llm.model.layers.0.mlp.up_proj.weight" in msg
    assert "state_proj.projector.weight checkpoint (16, 32) vs model (16, 8)" in msg
    assert "lm_head" in msg  # unused heads are unexpected under strict loading


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


def test_real_size_lora_config_trains_a_small_fraction():
    cfg = Config.fromfile(PI0_LORA)["model"]
    with torch.device("meta"):
        model = build(cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"pi0 LoRA rank 32: trainable {trainable:,} of {_count(model):,}")
    assert 0 < trainable < 0.05 * _count(model)
