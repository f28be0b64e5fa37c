"""A pretrained load is reported by name in the work dir (pretrained_load_report.json) and the log, and a
checkpoint that does not fit the model stops the run before training, naming what is wrong."""
from __future__ import annotations

import json

import pytest
import torch

from tests.trainer.tiny_model import TrainerTestPolicy

from .conftest import data_options, run_train

pytestmark = pytest.mark.timeout(300)


def _weights(tmp_path, drop: str | None = None):
    sd = TrainerTestPolicy(state_dim=8, action_dim=14, chunk_length=10, hidden=32).state_dict()
    if drop:
        del sd[drop]
    path = tmp_path / "pretrained.pt"
    torch.save(sd, path)
    return path, sd


def test_a_complete_checkpoint_is_loaded_and_reported(train_data, tmp_path):
    path, sd = _weights(tmp_path)
    work_dir = tmp_path / "wd"
    proc = run_train(work_dir, data_options(train_data) + [f"model.pretrained_name_or_path={path}",
                                                            "runner.max_steps=1"])
    assert proc.returncode == 0, proc.stderr
    report = json.loads((work_dir / "pretrained_load_report.json").read_text())
    assert report["ok"] and report["loaded_names"] == sorted(sd) and report["missing"] == []
    assert report["source"] == str(path)
    assert f"loaded {len(sd)}" in proc.stderr + proc.stdout


def test_a_missing_tensor_stops_the_run_and_the_report_names_it(train_data, tmp_path):
    path, _ = _weights(tmp_path, drop="head.bias")
    work_dir = tmp_path / "wd"
    proc = run_train(work_dir, data_options(train_data) + [f"model.pretrained_name_or_path={path}",
                                                            "runner.max_steps=1"])
    assert proc.returncode != 0
    assert "missing 1: head.bias" in proc.stderr
    report = json.loads((work_dir / "pretrained_load_report.json").read_text())
    assert report["missing"] == ["head.bias"] and not report["ok"]
    assert not (work_dir / "latest").exists()
