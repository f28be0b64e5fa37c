"""Each tiny guide config (pi0 full / LoRA, pi0.5, GR00T) trains a few steps into a complete work dir."""
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


@pytest.fixture(scope="module")
def tiny_runs(train_data, tmp_path_factory):
    """config -> work dir of a 2-step run with its defaults (shared by the tests below)."""
    done = {}

    def run(config: str):
        if config not in done:
            work_dir = tmp_path_factory.mktemp("tiny") / "wd"
            options = data_options(train_data)[:2] + ["runner.max_steps=2", "runner.save_step_interval=1"]
            if "gr00t" in config:  # its runner names a tokenizer too, which the runner builds
                options.append(data_options(train_data)[2])
            proc = run_train(work_dir, options, config=REPO / config, timeout=240)
            assert proc.returncode == 0, proc.stderr[-4000:]
            done[config] = work_dir
        return done[config]

    return run


@pytest.mark.parametrize("config", TINY_CONFIGS, ids=lambda c: c.split("/")[-1].removesuffix("_tiny.py"))
def test_tiny_config_trains_into_a_complete_work_dir(config, tiny_runs):
    work_dir = tiny_runs(config)

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


def test_seed_precision_settings_fsdp_bf16_with_gradient_checkpointing(train_data, tiny_runs, tmp_path):
    """The guide's full-finetune runner settings (FSDP2, bf16 mixed precision, gradient checkpointing)
    on tiny pi0: same losses as the fp32 DDP run within bf16 resolution, fp32 master weights saved."""
    fp32_dir = tiny_runs(TINY_CONFIGS[0])  # the tiny config's own settings: DDP, fp32
    options = data_options(train_data)[:2] + [
        "runner.max_steps=2", "runner.type=FSDPTrainRunner", "runner.enable_mixed_precision_training=True",
        "runner.mixed_precision_dtype=bf16", "runner.enable_gradient_checkpointing=True",
        "runner.sharding_strategy=shard-grad-op"]
    proc = run_train(tmp_path / "bf16", options, config=REPO / TINY_CONFIGS[0], timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "enable_gradient_checkpointing" not in proc.stderr  # no "ignored" notice: it took effect
    fp32, bf16 = losses(fp32_dir), losses(tmp_path / "bf16")
    assert fp32.keys() == bf16.keys() == {1, 2}
    for step in fp32:
        assert bf16[step] == pytest.approx(fp32[step], rel=2e-2)
        assert bf16[step] != fp32[step]  # bf16 really was used
    state = torch.load(tmp_path / "bf16/checkpoint_step_2.pt", weights_only=True)
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float32}
