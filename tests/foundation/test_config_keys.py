"""Every config key is checked: a typo in a file, in a `_base_` file, in --cfg-options or in a section read
as data is an error naming the file, the key path and the closest valid names."""
from __future__ import annotations

import dataclasses

import pytest

from vla.config import Config, ConfigError
from vla.config.schema import EVAL

from ..conftest import REPO

TINY = REPO / "configs/pi0/pi0_paligemma_libero_10_full_finetune_tiny.py"


@pytest.mark.parametrize("option, fragments", [
    ("train_dataloader.per_device_batch_sise=4", ("train_dataloader.per_device_batch_sise", "'per_device_batch_size'")),
    ("eval.num_trial_per_task=5", ("eval.num_trial_per_task", "'num_trials_per_task'")),
    ("eval.eval_chunk_sise=5", ("eval.eval_chunk_sise", "'eval_chunk_size'")),
    ("model.strict_loadin=False", ("model.strict_loadin", "'strict_loading'")),
    ("train_dataloader.dataset.datasets.action_windw_size=4", ("action_windw_size", "'action_window_size'")),
])
def test_cfg_options_cannot_create_unknown_keys(option, fragments):
    with pytest.raises(ConfigError) as err:
        Config.fromfile(TINY, [option])
    for fragment in fragments:
        assert fragment in str(err.value)


def test_cfg_options_may_add_a_keyword_the_type_accepts():
    cfg = Config.fromfile(TINY, ["model.strict_loading=False", "model.allow_missing_keys=['action_out_proj']",
                                 "eval.max_steps=30"])
    assert cfg.model["strict_loading"] is False and cfg.eval["max_steps"] == 30


def test_unknown_key_in_a_base_file_names_that_file(tmp_path):
    base = tmp_path / "base.py"
    base.write_text("train_dataloader = dict(batch_size=4, per_device_batch_sise=2)\n")
    child = tmp_path / "child.py"
    child.write_text("_base_ = './base.py'\neval = dict(task_suite_name='libero_10')\n")
    with pytest.raises(ConfigError, match=r"base\.py: train_dataloader\.per_device_batch_sise: unknown key.*"
                                          r"'per_device_batch_size'"):
        Config.fromfile(child)


def test_data_sections_name_the_one_type_they_implement(tmp_path):
    cfg = tmp_path / "c.py"
    cfg.write_text("eval = dict(type='LiberoEvalRunner', dataset=dict(type='SomeOtherDataset', transforms=[]))\n")
    with pytest.raises(ConfigError, match="eval.dataset.type='SomeOtherDataset'.*'LiberoParquetEvalDataset'"):
        Config.fromfile(cfg)


def test_the_eval_schema_covers_the_sim_clients_eval_config():
    from sim_client.runner import EvalConfig

    assert {f.name for f in dataclasses.fields(EvalConfig)} <= EVAL


def test_every_shipped_config_passes():
    for path in sorted(REPO.glob("configs/*/*.py")):
        if not path.parent.name.startswith("_"):
            Config.fromfile(path)
