"""The trainer's data plumbing: batch arithmetic, the dataset with its statistics, the per-epoch loader.

Batch arithmetic (as in OpenVLA/prismatic, which FluxVLA follows): `train_dataloader.batch_size`
is the global batch per optimizer step and must equal per_device_batch_size × world size ×
grad_accumulation_steps; accumulation is derived from it, and an explicit runner
`grad_accumulation_steps` that disagrees is an error.

Statistics (docs/ARCHITECTURE.md, Statistics binding): rank 0 builds the dataset, which computes them
and binds them into its transforms, and writes `dataset_statistics.json` and `run_info.json`; the
other ranks, a resumed run and a config naming `dataset_statistics` load the file instead.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

import torch
from torch.utils.data import DataLoader

from trainer.distributed import DistInfo, barrier
from vla.config import Config, ConfigError, build
from vla.normalize import STATISTICS_FILENAME
from vla.run_info import write_run_info


# What the loop needs of the dataset (DistributedRepeatingDataset's interface).
DATASET_METHODS = ("set_epoch", "set_batch_size", "save_statistics", "run_info")


def batch_plan(cfg: Config, world_size: int, requested_accumulation: int | None,
               where: str) -> tuple[int, int, int]:
    """(global batch, per-device batch, accumulation) checked against the world size."""
    dl = cfg.get("train_dataloader")
    if not isinstance(dl, Mapping):
        raise ConfigError(f"{cfg.filename}: no train_dataloader section")
    per_device = dl.get("per_device_batch_size")
    if not isinstance(per_device, int) or per_device < 1:
        raise ConfigError(f"{cfg.filename}: train_dataloader.per_device_batch_size must be a positive "
                          f"int, got {per_device!r}")
    global_batch = dl.get("batch_size")
    if global_batch is None:
        global_batch = per_device * world_size * (requested_accumulation or 1)
    per_step = per_device * world_size
    if not isinstance(global_batch, int) or global_batch < 1 or global_batch % per_step:
        raise ConfigError(
            f"{cfg.filename}: train_dataloader.batch_size={global_batch!r} must be a multiple of "
            f"per_device_batch_size ({per_device}) x world size ({world_size}) = {per_step}; it equals "
            f"per_device_batch_size x world size x grad_accumulation_steps")
    accumulation = global_batch // per_step
    if requested_accumulation is not None and requested_accumulation != accumulation:
        raise ConfigError(
            f"{where}.grad_accumulation_steps={requested_accumulation} disagrees with "
            f"train_dataloader.batch_size={global_batch} / (per_device_batch_size {per_device} x world size "
            f"{world_size}) = {accumulation}")
    return global_batch, per_device, accumulation


def build_dataset(cfg: Config, work_dir: Path, info: DistInfo, resume: bool) -> Any:
    """The training dataset with the run's statistics bound into its transforms (module doc)."""
    ds_cfg = copy.deepcopy(dict(cfg.train_dataloader["dataset"]))
    stats_path = work_dir / STATISTICS_FILENAME
    given = ds_cfg.get("dataset_statistics") is not None
    source = cfg.filename

    def _build(c):
        return build(c, source=source, path="train_dataloader.dataset")

    if given or (resume and stats_path.is_file()):
        if not given:
            ds_cfg["dataset_statistics"] = str(stats_path)
        dataset = _build(ds_cfg)
        if info.is_main and not stats_path.is_file():
            dataset.save_statistics(work_dir)
    elif info.is_main:
        dataset = _build(ds_cfg)
        dataset.save_statistics(work_dir)
        barrier()
    else:
        barrier()  # wait for rank 0's statistics file, then read it instead of recomputing
        dataset = _build({**ds_cfg, "dataset_statistics": str(stats_path)})
    for method in DATASET_METHODS:
        if not hasattr(dataset, method):
            raise ConfigError(f"{source}: train_dataloader.dataset must be a DistributedRepeatingDataset "
                              f"(resumable order and statistics); {type(dataset).__name__} has no {method}()")
    if info.is_main:
        write_run_info(work_dir, dataset.run_info())
    return dataset


def make_loader(dataset: Any, collator: Any, per_device: int, *, num_workers: int, seed: int,
                info: DistInfo) -> DataLoader:
    """One epoch's DataLoader; its own generator (seeded per epoch by the caller) leaves the global RNG alone."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=per_device, collate_fn=collator, num_workers=num_workers,
                      generator=generator, pin_memory=info.device.type == "cuda", persistent_workers=False)


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    if device.type == "cpu":
        return dict(batch)
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
