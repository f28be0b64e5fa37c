"""A small registered test model obeying the model contract, and a real work dir around it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vla import checkpoint as ckpt
from vla.config import register
from vla.io import atomic_write_text
from vla.models.base import VLAModel
from vla.normalize import DatasetStatistics, FeatureStats, save_statistics

STAT_NAME = "libero_10_no_noops"
IMAGE = 32
MAX_LEN = 16
MEANS = [[123.5, 116.0, 103.6], [100.0, 110.0, 120.0]]
STDS = [[58.3, 57.0, 57.3], [50.0, 40.0, 30.0]]


@register
class ServerTestModel(VLAModel):
    """Pools images, prompt tokens and state into actions [B, chunk, action_dim] (normalised units)."""

    def __init__(self, state_dim: int = 10, action_dim: int = 8, chunk_length: int = 4, vocab: int = 1024,
                 cameras: int = 2, width: int = 16, lora_rank: int = 0):
        super().__init__()
        self.state_dim, self.action_dim, self.chunk_length = state_dim, action_dim, chunk_length
        self.img = nn.Linear(cameras * 3, width)
        self.tok = nn.Embedding(vocab, width)
        self.state = nn.Linear(state_dim, width)
        self.head = nn.Linear(width, chunk_length * action_dim)
        if lora_rank:
            from vla.models.lora import apply_lora

            apply_lora(self, rank=lora_rank, target_modules=["head"])

    def forward(self, batch):
        pred = self.predict_action(batch)
        return {"loss": ((pred - batch["actions"][..., :self.action_dim]) ** 2).mean()}

    def predict_action(self, batch, *, noise=None) -> torch.Tensor:   # deterministic: no noise to use
        img = batch["images"].mean(dim=(-1, -2)).flatten(1)
        m = batch["lang_masks"].float()
        tok = (self.tok(batch["lang_tokens"]) * m[..., None]).sum(1) / m.sum(1, keepdim=True)
        h = torch.tanh(self.img(img) + tok + self.state(batch["states"]))
        return self.head(h).view(-1, self.chunk_length, self.action_dim)

def random_statistics(seed: int, gripper_min: float = -1.0) -> DatasetStatistics:
    rng = np.random.default_rng(seed)

    def block(dim, mask=None):
        mean = rng.normal(0, 0.2, dim)
        std = rng.uniform(0.1, 0.5, dim)
        return FeatureStats(mean=mean, std=std, min=mean - 3 * std, max=mean + 3 * std, q01=mean - 2 * std,
                            q99=mean + 2 * std, mask=mask)

    action = block(7, mask=[True] * 6 + [False])
    action.min[-1], action.max[-1] = gripper_min, 1.0
    return DatasetStatistics(action=action, proprio=block(8), num_transitions=100, num_trajectories=2)


def tokenizer_cfg(tok_dir: Path) -> dict:
    return {"type": "PretrainedTokenizer", "model_path": str(tok_dir)}


def eval_section(tok_dir: Path, image: int = IMAGE) -> dict:
    return {"dataset": {"transforms": [
        {"type": "ProcessLiberoEvalInputs", "img_keys": ["agentview_image", "robot0_eye_in_hand_image"]},
        {"type": "TransformImage", "image_resize_strategy": "resize-naive",
         "input_sizes": [[3, image, image], [3, image, image]], "means": MEANS, "stds": STDS},
        {"type": "LiberoPromptFromInputs", "tokenizer": tokenizer_cfg(tok_dir)},
        {"type": "LiberoProprioFromInputs", "use_quantiles": False, "pos_key": "robot0_eef_pos",
         "quat_key": "robot0_eef_quat", "gripper_key": "robot0_gripper_qpos", "out_key": "states"}]},
        "denormalize_action": {"type": "DenormalizeLiberoAction", "use_quantiles": False}}


def make_work_dir(root: Path, tok_dir: Path, *, seed: int = 0, lora: bool = False, fmt: str = "pt") -> tuple[Path, nn.Module]:
    torch.manual_seed(seed)
    model_cfg = {"type": "ServerTestModel", "state_dim": 10, "action_dim": 8, "chunk_length": 4,
                 "lora_rank": 4 if lora else 0}
    model = ServerTestModel(10, 8, 4, lora_rank=model_cfg["lora_rank"])
    if lora:   # trained adapters: B is non-zero, so merging changes the base weight
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
    cfg = {"model": model_cfg,
           "train_dataloader": {"dataset": {"statistic_name": STAT_NAME, "transforms": [
               {"type": "ProcessPrompts", "max_len": MAX_LEN, "tokenizer": tokenizer_cfg(tok_dir)}]}},
           "eval": eval_section(tok_dir)}
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "config.json", json.dumps(cfg, indent=2))
    save_statistics(root / "dataset_statistics.json", STAT_NAME, random_statistics(seed))
    name = "checkpoint_step_3.pt"
    if fmt == "safetensors":
        from safetensors.torch import save_file

        name = "checkpoint_step_3.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / name))
    else:   # the trainer's layout: weights-only .pt and `latest` naming it
        ckpt.save_weights(root, name, model.state_dict())
        atomic_write_text(root / "latest", name)
    return root, model


def infer(engine, *observations: dict) -> list[np.ndarray]:
    """What the server does with each request: `prepare` it, then one `infer_batch` for all."""
    return engine.infer_batch([engine.prepare(obs) for obs in observations])
