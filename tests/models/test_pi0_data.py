"""The tiny π0 / π0.5 configs end to end on data: their own train_dataloader section (synthetic LIBERO,
tiny tokenizer) -> their collator -> model.forward / predict_action, so the batch contract holds."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from vla.config import Config, build
from vla.data.synthetic import write_synthetic_libero_dataset

from ..conftest import REPO

TINY_CONFIGS = [REPO / "configs/pi0/pi0_paligemma_libero_10_full_finetune_tiny.py",
                REPO / "configs/pi0/pi0_paligemma_libero_10_lora_finetune_tiny.py",
                REPO / "configs/pi05/pi05_paligemma_libero_10_full_finetune_tiny.py"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_synthetic_libero_dataset(tmp_path_factory.mktemp("pi0data") / "libero", num_episodes=2,
                                          episode_length=[12, 9], image_size=64)


@pytest.mark.parametrize("path", TINY_CONFIGS, ids=lambda p: p.stem)
def test_tiny_config_trains_on_its_own_data_pipeline(path, data_root, tiny_tokenizer_dir):
    transforms = Config.fromfile(path)["train_dataloader"]["dataset"]["datasets"]["transforms"]
    prompt_index = next(i for i, t in enumerate(transforms) if t["type"] == "ProcessPrompts")
    cfg = Config.fromfile(path, [
        f"train_dataloader.dataset.datasets.data_root_path={data_root}",
        f"train_dataloader.dataset.datasets.transforms.{prompt_index}.tokenizer.model_path={tiny_tokenizer_dir}",
    ])
    dataset = build(cfg["train_dataloader"]["dataset"])
    batch = next(iter(DataLoader(dataset, batch_size=2, collate_fn=build(cfg["runner"]["collator"]))))
    torch.manual_seed(0)
    model = build(cfg["model"])
    out = model(batch)
    assert torch.isfinite(out["loss"]) and out["loss"].requires_grad
    out["loss"].backward()
    model.eval()
    actions = model.predict_action(batch)
    assert actions.shape == (2, model.chunk_length, model.action_dim) == (2, 10, 7)
    assert torch.isfinite(actions).all()
