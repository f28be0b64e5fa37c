"""The training loop: epochs of optimizer steps, each `accumulation` micro-batches, with saves.

`train(runner)` runs a built runner (trainer/runners.py): it prepares the work dir, builds the
dataset (trainer/data.py), the model (parallelised by the runner, trainer/parallelize.py), the
optimizer and schedule, restores a checkpoint when resuming (trainer/checkpointing.py), then steps
until `max_steps` or `max_epochs`, saving every `save_step_interval` steps, every
`save_epoch_interval` epochs and at the end.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from trainer import checkpointing, data
from trainer.distributed import all_reduce_mean, barrier
from trainer.schedulers import build_scheduler
from trainer.state import seed_everything
from vla import checkpoint as ckpt
from vla.config import ConfigError, build
from vla.data.binding import bind_model, dataset_transforms
from vla.errors import VLAError



class NonFiniteLossError(VLAError, FloatingPointError):
    """The loss of a micro-batch is NaN or infinite; the message names the batch's samples."""


def _as_list(value: Any) -> list:
    if isinstance(value, torch.Tensor):
        return value.reshape(-1).tolist()
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _samples_of(batch: Mapping[str, Any], most: int = 8) -> str:
    """'episodes/frames [(3, 17), ...] of <data_root>' from the passthrough keys the transforms keep."""
    if "episode_index" not in batch:
        return "a batch without episode_index (no sample can be named)"
    episodes = _as_list(batch["episode_index"])
    frames = _as_list(batch.get("frame_index", [None] * len(episodes)))
    pairs = [(int(e), None if f is None else int(f)) for e, f in zip(episodes, frames)]
    roots = sorted({str(r) for r in _as_list(batch["data_root"])}) if "data_root" in batch else []
    shown = ", ".join(f"episode {e} frame {f}" for e, f in pairs[:most])
    more = f" and {len(pairs) - most} more" if len(pairs) > most else ""
    return f"{len(pairs)} samples ({shown}{more})" + (f" of {', '.join(roots)}" if roots else "")

def train(runner: Any) -> dict[str, Any]:
    opts, info, cfg, work_dir = runner.options, runner.dist, runner.cfg, runner.work_dir
    checkpointing.prepare_work_dir(cfg, work_dir, info, opts.resume)
    global_batch, per_device, accumulation = runner.batch_plan()
    dataset = data.build_dataset(cfg, work_dir, info, opts.resume)
    dataset.set_batch_size(per_device)
    collator = build(opts.collator, source=cfg.filename, path="runner.collator")
    samples_per_rank = len(dataset)
    steps_per_epoch = samples_per_rank // per_device // accumulation
    if steps_per_epoch < 1:
        raise ConfigError(f"{cfg.filename}: an epoch has {samples_per_rank} samples per rank, fewer than "
                          f"one optimizer step needs (per_device_batch_size {per_device} x accumulation "
                          f"{accumulation})")
    total_steps = opts.max_epochs * steps_per_epoch
    if opts.max_steps is not None:
        total_steps = min(total_steps, opts.max_steps)

    model = runner.build_model()
    bind_model(dataset_transforms(dataset), model)   # what only the model knows (vision tokens per image)
    model = runner.wrap(model)
    optimizer = runner.build_optimizer(model)
    scheduler = build_scheduler(optimizer, opts.lr_scheduler_type, total_steps, opts.warmup_ratio)

    def save(name: str, step: int, epoch: int, step_in_epoch: int) -> None:
        checkpointing.save(work_dir, info, model, optimizer, scheduler, name, step=step, epoch=epoch,
                           step_in_epoch=step_in_epoch, seed=opts.seed, keep_train_states=opts.keep_train_states)

    step = epoch = step_in_epoch = 0
    restored = checkpointing.restore(work_dir, info, model, optimizer, scheduler, runner.log) if opts.resume else None
    if restored is not None:
        step, epoch, step_in_epoch = restored
    else:
        seed_everything(opts.seed + info.rank)  # per-rank noise (flow-matching time, dropout)

    metric = build({**opts.metric, "grad_accumulation_steps": accumulation}, source=cfg.filename,
                   path="runner.metric", work_dir=work_dir, rank=info.rank)
    metric.start(config=cfg.to_plain(), resume_step=step if opts.resume else None)
    runner.log(f"world {info.world_size} | global batch {global_batch} = {per_device} per device x "
               f"{info.world_size} x accumulation {accumulation} | {steps_per_epoch} steps/epoch | "
               f"{total_steps} steps | from step {step}")

    def saves_after_epoch(epochs_done: int) -> bool:
        return epochs_done % opts.save_epoch_interval == 0 or epochs_done == opts.max_epochs

    progress = _progress(total_steps, step, info.is_main)
    last_saved = step if restored is not None else -1
    trainable = [p for p in model.parameters() if p.requires_grad]
    workers = int(cfg.train_dataloader.get("per_device_num_workers", 0) or 0)
    model.train()
    while step < total_steps and epoch < opts.max_epochs:
        dataset.set_epoch(epoch, skip=step_in_epoch * accumulation * per_device)
        batches = iter(data.make_loader(dataset, collator, per_device, num_workers=workers,
                                        seed=opts.seed + epoch, info=info))
        while step_in_epoch < steps_per_epoch and step < total_steps:
            started = time.perf_counter()
            loss_sum = _accumulate(runner, model, batches, accumulation)
            grad_norm = _clip(trainable, opts.max_grad_norm)
            lr = optimizer.param_groups[0]["lr"]  # the rate this step uses, before the scheduler moves on
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            step_in_epoch += 1
            loss = float(all_reduce_mean(loss_sum / accumulation))
            elapsed = time.perf_counter() - started
            record = metric.log(step=step, epoch=epoch, loss=loss, lr=lr, grad_norm=grad_norm,
                                samples_per_s=global_batch / max(elapsed, 1e-9), time=time.time())
            progress.update(1)
            progress.set_postfix(loss=f"{record['loss_smoothed']:.4f}", lr=f"{lr:.2e}", refresh=False)
            epoch_save = step_in_epoch == steps_per_epoch and saves_after_epoch(epoch + 1)
            if opts.save_step_interval and step % opts.save_step_interval == 0 and not epoch_save:
                save(ckpt.checkpoint_name(step=step), step, epoch, step_in_epoch)
                last_saved = step
        del batches  # shuts DataLoader workers down before the next epoch's start
        if step_in_epoch < steps_per_epoch:
            break  # max_steps reached inside the epoch
        epoch += 1
        step_in_epoch = 0
        if saves_after_epoch(epoch):
            save(ckpt.checkpoint_name(epoch=epoch), step, epoch, 0)
            last_saved = step
    if last_saved != step:
        save(ckpt.checkpoint_name(step=step), step, epoch, step_in_epoch)
    progress.close()
    metric.finish()
    barrier()
    return {"step": step, "epoch": epoch, "latest": ckpt.read_latest(work_dir),
            "steps_per_epoch": steps_per_epoch, "accumulation": accumulation}


def _accumulate(runner: Any, model: nn.Module, batches: Iterator[dict], accumulation: int) -> torch.Tensor:
    """Forward/backward `accumulation` micro-batches; returns the sum of their (unscaled) losses."""
    device = runner.dist.device
    total = torch.zeros((), dtype=torch.float32, device=device)
    for micro in range(accumulation):
        batch = data.to_device(next(batches), device)
        with runner.no_sync(model, skip_sync=micro < accumulation - 1):
            with runner.autocast():
                out = model(batch)
            loss = out["loss"] if isinstance(out, Mapping) else out
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"loss is {loss.item()} at a micro-batch of {_samples_of(batch)}; "
                                         "stopping before the optimizer step corrupts the weights (check "
                                         "those frames' values and the statistics, or lower the learning rate)")
            (loss / accumulation).backward()
        total += loss.detach().float()
    return total


def _clip(params: list[torch.Tensor], max_norm: float | None) -> float:
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm else float("inf"))
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr,
                mininterval=1.0)
