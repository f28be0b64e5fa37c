"""Units of the trainer: batch arithmetic, schedules, optimizer groups, checkpoint discovery, metrics."""
from __future__ import annotations

import json
import math

import pytest
import torch

from trainer.distributed import DistInfo
from trainer.metrics import VLAMetric
from trainer.runners import DDPTrainRunner, FSDPTrainRunner
from trainer.schedulers import build_scheduler, lr_multiplier
from vla import checkpoint as ckpt
from vla.config import Config, ConfigError, build

from .tiny_model import TrainerTestPolicy

COLLATOR = dict(type="DictCollator", keys=["states"])


def _runner(tmp_path, world=1, batch_size=128, per_device=8, runner_type="DDPTrainRunner", **kwargs):
    cfg = Config({"train_dataloader": {"batch_size": batch_size, "per_device_batch_size": per_device}},
                 filename="cfg.py")
    return build({"type": runner_type, "collator": COLLATOR, **kwargs}, config=cfg, work_dir=tmp_path,
                 dist_info=DistInfo(rank=0, local_rank=0, world_size=world, device=torch.device("cpu")))


@pytest.mark.parametrize("world,accumulation", [(8, 2), (4, 4), (16, 1), (1, 16)])
def test_accumulation_is_derived_from_the_global_batch(tmp_path, world, accumulation):
    # the guide: batch_size=128, per_device_batch_size=8 on MLP_WORKER_GPU=8 -> 2 micro-batches per step
    assert _runner(tmp_path, world=world).batch_plan() == (128, 8, accumulation)


def test_batch_size_mismatch_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"batch_size=128 must be a multiple of per_device_batch_size \(8\) x "
                                          r"world size \(3\) = 24"):
        _runner(tmp_path, world=3).batch_plan()
    with pytest.raises(ConfigError, match=r"grad_accumulation_steps=4 disagrees with .*= 2"):
        _runner(tmp_path, world=8, grad_accumulation_steps=4).batch_plan()
    assert _runner(tmp_path, world=8, grad_accumulation_steps=2).batch_plan()[2] == 2
    with pytest.raises(ConfigError, match="per_device_batch_size must be a positive int"):
        _runner(tmp_path, per_device=0).batch_plan()


def test_without_batch_size_the_global_batch_follows_accumulation(tmp_path):
    assert _runner(tmp_path, world=2, batch_size=None, grad_accumulation_steps=3).batch_plan() == (48, 8, 3)


@pytest.mark.parametrize("kwargs,match", [
    ({"lr_scheduler_type": "step"}, r"runner.lr_scheduler_type: 'step' is not one of"),
    ({"sharding_strategy": "hybrid"}, r"runner.sharding_strategy"),
    ({"mixed_precision_dtype": "fp8"}, r"runner.mixed_precision_dtype"),
    ({"sampler": {"type": "DistributedSampler"}}, r"runner.sampler: only None"),
    ({"max_epochs": 0}, r"runner.max_epochs must be >= 1"),
    ({"save_step_interval": 0}, r"runner.save_step_interval must be >= 1"),
    ({"enable_mixed_precision_training": True, "mixed_precision_dtype": "fp16"}, r"fp16 training needs loss scaling"),
    ({"change_key_name": True}, r"runner.change_key_name=True: .*not supported"),
    ({"tokenizer": {"type": "PretrainedTokenizer", "model_path": "/nonexistent/tok"}},
     r"runner.tokenizer.*/nonexistent/tok"),
])
def test_bad_runner_parameters_name_the_key(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        _runner(tmp_path, **kwargs)


def test_unknown_runner_parameter_suggests_the_name(tmp_path):
    with pytest.raises(ConfigError, match="save_epoch_intreval.*save_epoch_interval"):
        _runner(tmp_path, save_epoch_intreval=2)


def test_seed_runner_parameters_are_accepted_by_both_runners(tmp_path):
    from vla.data.tiny_tokenizer import build_tiny_tokenizer

    tok = build_tiny_tokenizer(tmp_path / "eagle2_hg_model")  # the runner builds it: a bad path fails
    seed = dict(max_epochs=24, learning_rate=2e-5, weight_decay=0.0, max_grad_norm=1.0, sampler=None,
                tokenizer=dict(type="PretrainedTokenizer", model_path=str(tok)),
                metric=dict(type="VLAMetric", active_trackers=("jsonl", "wandb"), run_dir="work_dirs",
                            wandb_project="FluxVLA", wandb_entity="limx", grad_accumulation_steps=1, window_size=1),
                lr_scheduler_type="constant", warmup_ratio=0.0, enable_gradient_checkpointing=True,
                enable_mixed_precision_training=True, mixed_precision_dtype="bf16", sharding_strategy="full-shard",
                change_key_name=False, save_epoch_interval=1)
    for runner_type in ("DDPTrainRunner", "FSDPTrainRunner"):
        runner = _runner(tmp_path, world=8, runner_type=runner_type, **seed)
        assert isinstance(runner, (DDPTrainRunner, FSDPTrainRunner)) and runner.batch_plan()[2] == 2
        assert runner.mixed_dtype == torch.bfloat16 and runner.tokenizer_cfg["model_path"].endswith("hg_model")


def test_frozen_parameters_are_not_optimised(tmp_path):
    runner = _runner(tmp_path)
    model = TrainerTestPolicy(freeze_embedding=True)
    optimizer = runner.build_optimizer(model)
    params = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert id(model.embed.weight) not in params
    assert params == {id(p) for p in model.parameters() if p.requires_grad}
    decay = {g["weight_decay"] for g in optimizer.param_groups}
    assert decay == {0.0}  # the guide's weight_decay=0.0; biases/norms are never decayed
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        runner.build_optimizer(model)


def test_schedules():
    total, warm = 10, 2
    assert [lr_multiplier("constant", s, total, warm) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]
    assert lr_multiplier("linear", 2, total, warm) == 1.0 and lr_multiplier("linear", 6, total, warm) == 0.5
    assert lr_multiplier("cosine", 6, total, warm) == pytest.approx(0.5)
    assert lr_multiplier("cosine", 4, total, warm) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    with pytest.raises(ValueError, match="lr_scheduler_type 'poly'"):
        lr_multiplier("poly", 0, total, warm)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="warmup_ratio"):
        build_scheduler(opt, "linear", 10, warmup_ratio=1.0)
    sched = build_scheduler(opt, "linear", 4)
    seen = []
    for _ in range(4):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == [1.0, 0.75, 0.5, 0.25]


# ---- checkpoint discovery -------------------------------------------------------------------------
def _save(work_dir, name, step):
    ckpt.save_weights(work_dir, name, {"w": torch.full((4,), float(step))})
    ckpt.save_train_state(work_dir, name, {"trainer.pt": {"step": step}})
    ckpt.commit(work_dir, name, step=step, epoch=0, keep_train_states=10)


def test_half_written_checkpoints_are_never_picked(tmp_path):
    _save(tmp_path, "checkpoint_step_2.pt", 2)
    _save(tmp_path, "checkpoint_step_4.pt", 4)
    assert ckpt.find_resumable(tmp_path).step == 4
    # a newer save that died before its manifest: weights and state on disk, `latest` untouched
    ckpt.save_weights(tmp_path, "checkpoint_step_6.pt", {"w": torch.zeros(4)})
    ckpt.save_train_state(tmp_path, "checkpoint_step_6.pt", {"trainer.pt": {"step": 6}})
    assert ckpt.find_resumable(tmp_path).step == 4
    # `latest` names a checkpoint whose weights were truncated afterwards: fall back to the newest good one
    weights = tmp_path / "checkpoint_step_4.pt"
    weights.write_bytes(weights.read_bytes()[:-10])
    assert ckpt.find_resumable(tmp_path).step == 2
    (tmp_path / ".checkpoint_step_8.pt.abc.tmp").write_bytes(b"partial")
    assert ckpt.remove_stale_temp_files(tmp_path) == 1


def test_latest_and_load_errors_name_the_file(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="no `latest` file"):
        ckpt.resolve_checkpoint(tmp_path)
    (tmp_path / "latest").write_text("../../etc/passwd\n")
    with pytest.raises(ckpt.CheckpointError, match="does not name a checkpoint"):
        ckpt.read_latest(tmp_path)
    bad = tmp_path / "checkpoint_step_1.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ckpt.CheckpointError, match="checkpoint_step_1.pt: cannot load this checkpoint"):
        ckpt.load_weights(bad)
    torch.save({"model": torch.nn.Linear(2, 2)}, bad)  # a pickled module is refused, not executed
    with pytest.raises(ckpt.CheckpointError, match="weights-only"):
        ckpt.load_weights(bad)


def test_train_states_are_pruned_but_weights_kept(tmp_path):
    for step in (1, 2, 3):
        ckpt.save_weights(tmp_path, f"checkpoint_step_{step}.pt", {"w": torch.zeros(1)})
        ckpt.save_train_state(tmp_path, f"checkpoint_step_{step}.pt", {"trainer.pt": {}})
        ckpt.commit(tmp_path, f"checkpoint_step_{step}.pt", step=step, epoch=0, keep_train_states=2)
    assert sorted(p.name for p in (tmp_path / "train_state").iterdir()) == ["checkpoint_step_2", "checkpoint_step_3"]
    assert all((tmp_path / f"checkpoint_step_{s}.pt").exists() for s in (1, 2, 3))
    assert (tmp_path / "checkpoint_step_3.pt").stat().st_mode & 0o044  # readable by the server's user


# ---- metrics --------------------------------------------------------------------------------------
def test_metric_resume_truncates_and_smooths(tmp_path):
    metric = VLAMetric(active_trackers=("jsonl",), window_size=2, work_dir=tmp_path)
    metric.start()
    for step, loss in enumerate([4.0, 2.0, 1.0, 3.0], start=1):
        metric.log(step=step, epoch=0, loss=loss, lr=0.1, grad_norm=1.0, samples_per_s=1.0)
    metric._file.write('{"step": 5, "loss"')  # a line cut by SIGKILL
    metric._file.flush()
    assert [r["loss_smoothed"] for r in metric.records()] == [4.0, 3.0, 1.5, 2.0]

    resumed = VLAMetric(active_trackers=("jsonl",), window_size=2, work_dir=tmp_path)
    resumed.start(resume_step=2)  # checkpoint at step 2: steps 3, 4 and the cut line go
    record = resumed.log(step=3, epoch=0, loss=6.0, lr=0.1, grad_norm=1.0, samples_per_s=1.0)
    assert record["loss_smoothed"] == 4.0  # window refilled from the kept lines (2.0, 6.0)
    assert resumed.finish() == tmp_path / "loss.png"
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_metric_rejects_unknown_trackers(tmp_path):
    with pytest.raises(ValueError, match="unknown trackers \\['tensorboard'\\]"):
        VLAMetric(active_trackers=("jsonl", "tensorboard"), work_dir=tmp_path)


def test_only_rank_zero_writes(tmp_path):
    metric = VLAMetric(active_trackers=("jsonl",), work_dir=tmp_path, rank=1)
    metric.start()
    metric.log(step=1, epoch=0, loss=1.0, lr=0.1, grad_norm=1.0, samples_per_s=1.0)
    assert metric.finish() is None and not (tmp_path / "metrics.jsonl").exists()


def test_loss_plot_trend_is_a_trailing_mean_over_about_five_percent_of_the_run():
    from trainer.metrics import plot_window, trailing_mean

    assert [plot_window(n) for n in (1, 19, 40, 200, 5000)] == [1, 1, 2, 10, 50]
    values = [4.0, 2.0, 6.0, 0.0, 8.0]
    assert trailing_mean(values, 1) == values
    assert trailing_mean(values, 2) == [4.0, 3.0, 4.0, 3.0, 4.0]
    assert trailing_mean(values, 3) == [4.0, 3.0, 4.0, 8 / 3, 14 / 3]


def test_vla_metric_records_grad_accumulation_in_the_first_line(tmp_path):
    from trainer.metrics import VLAMetric

    metric = VLAMetric(work_dir=tmp_path, grad_accumulation_steps=4)
    metric.start()
    metric.log(step=1, epoch=0, loss=1.0, lr=1e-3, grad_norm=0.5, samples_per_s=10.0)
    metric.log(step=2, epoch=0, loss=0.9, lr=1e-3, grad_norm=0.5, samples_per_s=10.0)
    metric.finish()
    first, second = metric.records()
    assert first["grad_accumulation_steps"] == 4 and "grad_accumulation_steps" not in second
