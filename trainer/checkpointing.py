"""The trainer's side of the work dir: preparing it, saving a checkpoint (collective), restoring one.

The file layout and commit order are `vla/checkpoint.py`'s (docs/ARCHITECTURE.md, Work dir). A
checkpoint is taken after an optimizer step and holds model, optimizer, scheduler, every rank's RNG
state and the sampler position (epoch, optimizer steps into it), so a resumed run continues exactly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)

from trainer.distributed import DistInfo, barrier
from trainer.state import rng_state, set_rng_state
from vla import checkpoint as ckpt
from vla.config import Config, ConfigError


def prepare_work_dir(cfg: Config, work_dir: Path, info: DistInfo, resume: bool) -> None:
    """Rank 0 creates the work dir (refusing one that holds a run unless resuming), clears stale temp
    files and writes the resolved config; every rank waits for it."""
    if info.is_main:
        work_dir.mkdir(parents=True, exist_ok=True)
        if not resume and ckpt.read_latest(work_dir) is not None:
            raise ConfigError(f"{work_dir} already holds a run (latest -> {ckpt.read_latest(work_dir)}); pass "
                              "--resume to continue it or choose another work dir")
        ckpt.remove_stale_temp_files(work_dir)
        cfg.dump(work_dir)
    barrier()


def save(work_dir: Path, info: DistInfo, model: nn.Module, optimizer, scheduler, name: str, *, step: int,
         epoch: int, step_in_epoch: int, seed: int, keep_train_states: int) -> None:
    """Collective: every rank gathers, rank 0 writes weights + optimizer, each rank its RNG."""
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_sd = get_model_state_dict(model, options=opts)
    optim_sd = get_optimizer_state_dict(model, optimizer, options=opts)
    if info.is_main:
        ckpt.save_weights(work_dir, name, model_sd)
        lora = {k: v for k, v in model_sd.items() if "lora_" in k}
        if lora:
            ckpt.save_adapter(work_dir, name, lora)
        trainer_state = {"scheduler": scheduler.state_dict(), "step": step, "epoch": epoch,
                         "step_in_epoch": step_in_epoch, "world_size": info.world_size, "seed": seed}
        ckpt.save_train_state(work_dir, name, {"optimizer.pt": optim_sd, "trainer.pt": trainer_state})
    barrier()
    ckpt.save_train_state(work_dir, name, {f"rng_rank{info.rank}.pt": rng_state()})
    barrier()
    if info.is_main:
        ckpt.commit(work_dir, name, step=step, epoch=epoch, keep_train_states=keep_train_states,
                    extra={"world_size": info.world_size, "step_in_epoch": step_in_epoch})
    barrier()


def restore(work_dir: Path, info: DistInfo, model: nn.Module, optimizer, scheduler,
            log: Callable[[str], None]) -> tuple[int, int, int] | None:
    """Load the newest complete checkpoint; returns (step, epoch, step_in_epoch) or None."""
    found = ckpt.find_resumable(work_dir)
    if found is None:
        log(f"--resume: no complete checkpoint in {work_dir}; starting from step 0")
        return None
    state = ckpt.load_train_state_file(found, "trainer.pt")
    if state["world_size"] != info.world_size:
        raise ConfigError(f"{found.state_dir}: saved with world size {state['world_size']}, resuming with "
                          f"{info.world_size}; exact resume needs the same number of processes")
    opts = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, ckpt.load_weights(found.weights), options=opts)
    set_optimizer_state_dict(model, optimizer, ckpt.load_train_state_file(found, "optimizer.pt"), options=opts)
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(ckpt.load_train_state_file(found, f"rng_rank{info.rank}.pt"))
    log(f"resumed from {found.weights.name} (step {state['step']}, epoch {state['epoch']})")
    return int(state["step"]), int(state["epoch"]), int(state["step_in_epoch"])
