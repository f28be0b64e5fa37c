"""FluxVLA's LIBERO data config end to end: config file -> dataset -> DataLoader -> batch contract."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vla.config import Config, ConfigError, build
from vla.data import DistributedRepeatingDataset
from vla.data.errors import TransformError
from vla.data.image_ops import normalize_images, resize_images
from vla.data.synthetic import synthetic_episode
from vla.normalize import Normalizer

from .conftest import IMAGE_SIZE, LENGTHS

# The LIBERO guide's "数据配置" section (GR00T flavour), verbatim but for the paths.
SEED_DATA_CONFIG = """
train_dataloader = dict(
    batch_size=128,
    per_device_batch_size=8,
    per_device_num_workers=4,
    dataset=dict(
        type='DistributedRepeatingDataset',
        name_mappings={'observation.state': ['proprio'], 'action': ['action']},
        statistic_keys=['observation.state', 'timestamp', 'action'],
        statistic_name='libero_10_no_noops',
        datasets=dict(
            type='ParquetDataset',
            data_root_path='/path/to/data/LIBERO_lerobot/libero_10_no_noops_1.0.0_lerobot',
            transforms=[
                dict(type='ProcessParquetInputs', embodiment_id=31,
                     parquet_keys=['observation.state', 'timestamp', 'actions', 'info', 'stats', 'action_masks'],
                     video_keys=['observation.images.image', 'observation.images.wrist_image'],
                     name_mappings={'observation.state': ['states'], 'actions': ['actions']}),
                dict(type='ParquetPrompter'),
                dict(type='ProcessPromptsWithImage', max_len=600, num_images=2, tokens_per_image=64,  # no model here
                     tokenizer=dict(type='PretrainedTokenizer', model_path='/path/to/models/eagle2_hg_model')),
                dict(type='ResizeImages', height=224, width=224),
                dict(type='NormalizeImages',
                     means=[[123.515625, 116.04492188, 103.59375], [123.515625, 116.04492188, 103.59375]],
                     stds=[[58.27148438, 57.02636719, 57.27539062], [58.27148438, 57.02636719, 57.27539062]]),
                dict(type='NormalizeStatesAndActions', action_dim=14, state_key='proprio', action_key='action',
                     use_quantiles=False)
            ],
            action_window_size=10, action_key='action', use_delta=False,
            statistic_name='libero_10_no_noops', window_start_idx=0)))
collator = dict(
    type='DictCollator',
    keys=['states', 'observation.eepose', 'timestamp', 'images', 'img_masks', 'lang_tokens', 'lang_masks',
          'actions', 'action_masks', 'embodiment_ids'],
    meta_keys=['task_description', 'prompt', 'info', 'stats'])
"""
MEANS = [123.515625, 116.04492188, 103.59375]
STDS = [58.27148438, 57.02636719, 57.27539062]


@pytest.fixture(scope="module")
def seed_cfg(tmp_path_factory, synthetic_root, tiny_tokenizer_dir):
    path = tmp_path_factory.mktemp("cfg") / "libero_data.py"
    path.write_text(SEED_DATA_CONFIG)
    return Config.fromfile(path, [
        f"train_dataloader.dataset.datasets.data_root_path={synthetic_root}",
        f"train_dataloader.dataset.datasets.transforms.2.tokenizer.model_path={tiny_tokenizer_dir}",
        "train_dataloader.dataset.datasets.transforms.3.height=32",
        "train_dataloader.dataset.datasets.transforms.3.width=32",
    ])


@pytest.fixture(scope="module")
def seed_dataset(seed_cfg):
    return build(seed_cfg.train_dataloader["dataset"])


def test_seed_config_yields_the_batch_contract(seed_cfg, seed_dataset, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    collate = build(seed_cfg.collator)
    batch = next(iter(DataLoader(seed_dataset, batch_size=3, collate_fn=collate)))
    expect = {
        "states": ((3, 8), torch.float32), "timestamp": ((3,), torch.float32),
        "images": ((3, 2, 3, 32, 32), torch.float32), "img_masks": ((3, 2), torch.bool),
        "lang_tokens": ((3, 600), torch.int64), "lang_masks": ((3, 600), torch.bool),
        "actions": ((3, 10, 14), torch.float32), "action_masks": ((3, 10, 14), torch.bool),
        "embodiment_ids": ((3,), torch.int64),
    }
    for key, (shape, dtype) in expect.items():
        assert tuple(batch[key].shape) == shape and batch[key].dtype == dtype, key
    assert "observation.eepose" not in batch  # listed by the guide, absent from LIBERO
    assert batch["embodiment_ids"].tolist() == [31, 31, 31]
    assert not batch["action_masks"][..., 7:].any()
    image_id = AutoTokenizer.from_pretrained(tiny_tokenizer_dir).convert_tokens_to_ids("<image>")
    assert ((batch["lang_tokens"] == image_id).sum(dim=1) == 2 * 64).all()  # 2 cameras × 64 placeholders
    assert len(batch["prompt"]) == 3 and all(isinstance(p, str) and p for p in batch["prompt"])
    # The guide's 'info'/'stats' keys are accepted; statistics are bound into the transforms instead.
    assert "stats" not in batch and "info" not in batch


def test_statistics_are_bound_once_into_the_transforms(seed_dataset, seed_cfg):
    inner = seed_dataset.datasets[0]
    norm = next(t for t in inner.transforms if type(t).__name__ == "NormalizeStatesAndActions")
    assert inner.statistics is seed_dataset.statistics
    np.testing.assert_array_equal(norm.action_norm.stats.q99, seed_dataset.statistics.action.q99)
    sample = inner[0]
    assert "stats" not in sample and "info" not in sample
    unbound = build(seed_cfg.train_dataloader["dataset"]["datasets"])    # a ParquetDataset on its own
    with pytest.raises(TransformError, match="NormalizeStatesAndActions: no statistics bound"):
        unbound[0]
    unbound.bind_statistics(seed_dataset.statistics)
    np.testing.assert_allclose(unbound[0]["actions"], sample["actions"])


def test_sample_values_are_normalised_with_the_dataset_statistics(seed_dataset):
    inner = seed_dataset.datasets[0]
    index = LENGTHS[0] + 3  # episode 1, row 3
    sample = inner[index]
    raw = synthetic_episode(1, LENGTHS[1], IMAGE_SIZE)
    stats = seed_dataset.statistics
    np.testing.assert_allclose(sample["states"], Normalizer(stats.proprio).normalize(raw["observation.state"][3]),
                               rtol=1e-5, atol=1e-6)
    want_actions = Normalizer(stats.action).normalize(raw["action"][3:3 + 6])  # 9 rows: 6 real, then padding
    np.testing.assert_allclose(sample["actions"][:6, :7], want_actions, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(sample["actions"][:, 7:], 0.0)
    assert sample["action_masks"][:, :7].sum(axis=1).tolist() == [7] * 6 + [0] * 4
    # the gripper dim is not normalised (mask False): stays ±1
    assert set(np.unique(sample["actions"][:6, 6])) <= {-1.0, 1.0}
    frames = np.stack([raw["observation.images.image"][3], raw["observation.images.wrist_image"][3]])
    want_images = normalize_images(resize_images(frames, 32, 32), MEANS, STDS)
    assert np.abs(sample["images"] - want_images).mean() < 0.05  # video compression error only
    assert sample["task_description"] == sample["prompt"]


def test_pi0_prompt_flavour_without_embodiment(seed_cfg, tiny_tokenizer_dir):
    cfg = seed_cfg.train_dataloader["dataset"]
    transforms = list(cfg["datasets"]["transforms"])
    transforms[0] = {k: v for k, v in transforms[0].items() if k != "embodiment_id"}
    transforms[2] = dict(type="ProcessPrompts", tokenizer=dict(type="PretrainedTokenizer",
                                                                model_path=str(tiny_tokenizer_dir)))
    ds = build({**cfg, "datasets": {**cfg["datasets"], "transforms": transforms}})
    sample = ds.datasets[0][0]
    assert "embodiment_ids" not in sample
    assert sample["lang_tokens"].shape == (180,) and sample["lang_masks"][0] and not sample["lang_masks"][-1]


def test_config_errors_name_the_key(seed_cfg):
    cfg = seed_cfg.train_dataloader["dataset"]
    bad = {**cfg, "datasets": {**cfg["datasets"], "action_windw_size": 3}}
    with pytest.raises(ConfigError, match="action_windw_size.*action_window_size"):
        build(bad)


def test_rank_orders_partition_each_epoch(seed_dataset):
    n = seed_dataset.total_len
    orders = [seed_dataset.epoch_order(0, rank, 3) for rank in range(3)]
    assert len({len(o) for o in orders}) == 1 and len(orders[0]) == -(-n // 3)
    merged = np.concatenate(orders)
    assert set(merged.tolist()) == set(range(n))  # every sample, the few extra repeat the start
    np.testing.assert_array_equal(seed_dataset.epoch_order(0, 1, 3), orders[1])  # deterministic
    assert not np.array_equal(seed_dataset.epoch_order(1, 1, 3), orders[1])  # reshuffled per epoch


def _tasks(loader) -> list[tuple[int, int]]:
    return [(int(e), int(f)) for batch in loader for e, f in zip(batch["episode_index"], batch["frame_index"])]


def test_workers_and_resume_keep_the_order(seed_dataset):
    collate = build(dict(type="DictCollator", keys=["episode_index", "frame_index"]))
    seed_dataset.set_batch_size(4)
    seed_dataset.set_epoch(2)
    single = _tasks(DataLoader(seed_dataset, batch_size=4, collate_fn=collate, num_workers=0))
    assert len(single) == len(seed_dataset) == sum(LENGTHS)
    multi = _tasks(DataLoader(seed_dataset, batch_size=4, collate_fn=collate, num_workers=2))
    assert multi == single
    seed_dataset.set_epoch(2, skip=8)  # resume after two batches
    resumed = _tasks(DataLoader(seed_dataset, batch_size=4, collate_fn=collate, num_workers=2))
    assert resumed == single[8:]
    seed_dataset.set_epoch(0)


def test_precomputed_statistics_file_is_used(seed_dataset, seed_cfg, tmp_path):
    path = seed_dataset.save_statistics(tmp_path)
    cfg = seed_cfg.train_dataloader["dataset"]
    again = build({**cfg, "dataset_statistics": str(path)})
    np.testing.assert_allclose(again.statistics.action.q99, seed_dataset.statistics.action.q99)
    assert isinstance(again, DistributedRepeatingDataset)
