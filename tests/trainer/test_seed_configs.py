"""Each tiny seed config (pi0 full / LoRA, pi0.5, GR00T) trains a few steps into a complete work dir."""
from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import REPO
from vla.config import Config, build

from .conftest import data_options, losses, run_train

pytestmark = pytest.mark.timeout(300)

TINY_CONFIGS = [
    "configs/pi0/pi0_paligemma_libero_10_full_finetune_tiny.py",
    "configs/pi0/pi0_paligemma_libero_10_lora_finetune_tiny.py",
    "configs/pi05/pi05_paligemma_libero_10_full_finetune_tiny.py",
    "configs/gr00t/gr00t_eagle_3b_libero_10_full_train_tiny.py",
]


@pytest.mark.parametrize("config", TINY_CONFIGS, ids=lambda c: c.split("/")[-1].removesuffix("_tiny.py"))
def test_tiny_config_trains_into_a_complete_work_dir(config, train_data, tmp_path):
    path = REPO / config
    if not path.exists():
        pytest.skip(f"{config} has not landed yet (models helper)")
    work_dir = tmp_path / "wd"
    options = data_options(train_data)[:2] + ["runner.max_steps=2", "runner.save_step_interval=1"]
    proc = run_train(work_dir, options, config=path, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]

    names = {p.name for p in work_dir.iterdir()}
    assert {"config.json", "config.yaml", "dataset_statistics.json", "metrics.jsonl", "loss.png", "latest",
            "checkpoint_step_1.pt", "checkpoint_step_2.pt", "train_state"} <= names
    assert (work_dir / "latest").read_text().strip() == "checkpoint_step_2.pt"
    assert json.loads((work_dir / "train_state/checkpoint_step_2/manifest.json").read_text())["step"] == 2
    loss = losses(work_dir)
    assert sorted(loss) == [1, 2] and all(v == v and v > 0 for v in loss.values())  # finite, positive

    # The weights file loads strictly into the model built from the dumped config (what the server does).
    cfg = Config.fromfile(work_dir / "config.json")
    model = build(cfg.model)
    state = torch.load(work_dir / "checkpoint_step_2.pt", weights_only=True)
    model.load_state_dict(state, strict=True)
    first = torch.load(work_dir / "checkpoint_step_1.pt", weights_only=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any(not torch.equal(first[n], state[n]) for n in trainable)  # training moved the weights
    assert all(torch.equal(first[n], state[n]) for n in frozen)  # frozen ones did not move
    if cfg.model.get("use_lora"):
        from safetensors.torch import load_file

        adapter = load_file(work_dir / "adapter_step_2.safetensors")
        assert adapter and all(".lora_" in k for k in adapter)
        assert frozen  # the LoRA config freezes the backbone and expert
