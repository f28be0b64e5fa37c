"""One real `vla-train` run of the guide-shaped config: the complete work dir (docs/ARCHITECTURE.md, Work dir)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from vla import checkpoint as ckpt
from vla.config import Config
from vla.normalize import load_statistics
from vla.run_info import read_run_info

from .conftest import data_options, losses, run_train

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def finished_run(train_data, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("run") / "wd"
    proc = run_train(work_dir, data_options(train_data) + ["runner.save_step_interval=4",
                                                            "runner.lr_scheduler_type=cosine",
                                                            "runner.warmup_ratio=0.2"])
    assert proc.returncode == 0, proc.stderr
    return work_dir, proc


def test_work_dir_is_complete(finished_run):
    work_dir, proc = finished_run
    # 24 samples, 2 per device x accumulation 2 -> 6 steps/epoch, 2 epochs
    names = {p.name for p in work_dir.iterdir()}
    assert {"config.json", "config.yaml", "dataset_statistics.json", "run_info.json", "metrics.jsonl", "loss.png",
            "latest", "train_state", "checkpoint_epoch_1.pt", "checkpoint_epoch_2.pt", "checkpoint_step_4.pt",
            "checkpoint_step_8.pt"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    assert (work_dir / "latest").read_text().strip() == "checkpoint_epoch_2.pt"
    assert (work_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wandb" in proc.stderr  # the one-line notice: requested but not installed/configured
    run = read_run_info(work_dir)
    assert run.statistic_name == "libero_10_no_noops" and run.prompt.type in ("ProcessPrompts",
                                                                               "ProcessPromptsWithImage")
    assert run.prompt.max_len > 0 and Path(run.prompt.tokenizer_path).is_dir()


def test_config_dump_round_trips(finished_run, train_data):
    work_dir, _ = finished_run
    dumped = Config.fromfile(work_dir / "config.json")
    assert dumped["runner"]["type"] == "DDPTrainRunner"
    assert dumped["train_dataloader"]["dataset"]["datasets"]["data_root_path"] == train_data["data"]
    assert Config.fromfile(work_dir / "config.yaml").to_plain() == dumped.to_plain()


def test_statistics_written_by_the_trainer(finished_run):
    work_dir, _ = finished_run
    stats = load_statistics(work_dir / "dataset_statistics.json", "libero_10_no_noops")
    assert stats.action.dim == 7 and stats.proprio.dim == 8
    assert stats.num_transitions == 24 and stats.num_trajectories == 3


def test_checkpoints_are_weights_only_and_load_into_the_model(finished_run):
    from tests.trainer.tiny_model import TrainerTestPolicy

    work_dir, _ = finished_run
    state = torch.load(work_dir / "checkpoint_epoch_2.pt", weights_only=True)
    model = TrainerTestPolicy()
    model.load_state_dict(state)  # strict: same keys, no wrapper prefixes
    first = torch.load(work_dir / "checkpoint_step_4.pt", weights_only=True)
    assert not torch.equal(first["head.weight"], state["head.weight"])  # weights moved between checkpoints
    assert ckpt.load_weights(work_dir).keys() == state.keys()  # a work dir resolves through `latest`


def test_train_state_manifests(finished_run):
    work_dir, _ = finished_run
    kept = sorted(p.name for p in (work_dir / "train_state").iterdir())
    assert kept == ["checkpoint_epoch_2", "checkpoint_step_8"]  # keep_train_states=2 prunes older ones
    manifest = json.loads((work_dir / "train_state/checkpoint_epoch_2/manifest.json").read_text())
    assert manifest["step"] == 12 and manifest["epoch"] == 2
    assert set(manifest["files"]) == {"weights", "optimizer.pt", "trainer.pt", "rng_rank0.pt"}
    assert ckpt.find_resumable(work_dir).weights.name == "checkpoint_epoch_2.pt"


def test_metrics_per_step(finished_run):
    work_dir, _ = finished_run
    records = [json.loads(line) for line in (work_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 13))
    assert [r["epoch"] for r in records] == [0] * 6 + [1] * 6
    for r in records:
        assert {"loss", "loss_smoothed", "lr", "grad_norm", "samples_per_s"} <= set(r)
        assert r["grad_norm"] > 0 and r["samples_per_s"] > 0
    lrs = [r["lr"] for r in records]
    # the rate each step used: cosine with warm-up ceil(0.2 x 12) = 3 steps ramping 1/3, 2/3, 1 of 1e-3,
    # then half a cosine over the remaining 9 steps (the last used rate is cos at 8/9 of the way)
    assert lrs[:4] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3, 1e-3])
    assert lrs[-1] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 8 / 9)))
    assert all(a > b for a, b in zip(lrs[3:], lrs[4:]))
    loss = losses(work_dir)
    assert sum(loss[s] for s in (10, 11, 12)) < sum(loss[s] for s in (1, 2, 3))  # it learns


def test_refuses_to_overwrite_a_run_without_resume(finished_run, train_data):
    work_dir, _ = finished_run
    proc = run_train(work_dir, data_options(train_data))
    assert proc.returncode == 2
    assert "already holds a run" in proc.stderr and "--resume" in proc.stderr
