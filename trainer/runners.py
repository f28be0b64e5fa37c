"""`DDPTrainRunner` and `FSDPTrainRunner`: FluxVLA's runner names, one training loop, two wrappings.

A runner is built from the config's `runner` section (its parameters validated once into a
`RunnerConfig`, trainer/runner_config.py) and holds what the loop needs: the model, wrapped from
outside by trainer/parallelize.py (DDP or FSDP2, activation checkpointing), the optimizer, autocast
and gradient-sync control. The loop is trainer/loop.py, the data plumbing trainer/data.py, the
checkpoints trainer/checkpointing.py.

Resume is exact: a checkpoint is taken after an optimizer step and holds model, optimizer,
scheduler, every rank's RNG state and the sampler position (epoch, optimizer steps into it);
the DataLoader uses its own generator, so building it never draws from the global RNG.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from trainer import data, loop, parallelize
from trainer.distributed import DistInfo, init_distributed
from trainer.metrics import VLAMetric  # noqa: F401 - registers VLAMetric
from trainer.runner_config import RunnerConfig
from trainer.state import seed_everything
from vla.config import Config, ConfigError, build, register
from vla.models.base import VLAModel
from vla.models.loading import CheckpointMismatchError

PRETRAINED_REPORT_FILENAME = "pretrained_load_report.json"

log = logging.getLogger(__name__)


class BaseTrainRunner:
    """Train `cfg.model` on `cfg.train_dataloader` into `work_dir` (see module doc).

    `**params` are the `runner` section's keys (RunnerConfig's fields, FluxVLA's names)."""

    # Built by the runner itself once it knows the work dir and rank (or never: tokenizer).
    __config_lazy__ = ("collator", "metric", "tokenizer", "sampler")

    @classmethod
    def accepted_keys(cls) -> set[str]:
        """The runner section's keys (RunnerConfig's fields), for `--cfg-options runner.<key>=...`."""
        return {f.name for f in dataclasses.fields(RunnerConfig)} | {"type"}

    def __init__(self, config: Config | Mapping[str, Any], work_dir: str | os.PathLike, *,
                 dist_info: DistInfo | None = None, **params: Any):
        where = f"{getattr(config, 'filename', None) or 'config'}: runner"
        self.options = RunnerConfig.from_params(params, where)
        self.cfg = config if isinstance(config, Config) else Config(dict(config))
        self.where = where
        self.work_dir = Path(work_dir)
        self.dist = dist_info or init_distributed()
        self.tokenizer = None   # the transforms carry their own; built here so a bad path fails at once
        if self.options.tokenizer is not None:
            self.tokenizer = build(self.options.tokenizer, source=getattr(config, "filename", None),
                                   path="runner.tokenizer")

    # ---- what the tests and the loop read ---------------------------------------------------
    @property
    def mixed_dtype(self) -> torch.dtype:
        return self.options.mixed_dtype

    @property
    def tokenizer_cfg(self) -> Any:
        return self.options.tokenizer  # FluxVLA's configs list it; the dataset transforms carry their own

    def log(self, message: str) -> None:
        if self.dist.is_main:
            log.info("[vla-train] %s", message)

    def batch_plan(self) -> tuple[int, int, int]:
        """(global batch, per-device batch, accumulation) checked against the world size."""
        return data.batch_plan(self.cfg, self.dist.world_size, self.options.grad_accumulation_steps, self.where)

    def run(self) -> dict[str, Any]:
        return loop.train(self)

    # ---- subclass hooks -------------------------------------------------------------------
    def wrap(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def no_sync(self, model: nn.Module, skip_sync: bool):
        return contextlib.nullcontext()

    def autocast(self):
        dtype = self.options.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.dist.device.type, dtype=dtype)

    # ---- setup ------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        seed_everything(self.options.seed)  # identical initial weights on every rank (FSDP does not broadcast)
        model = build(self.cfg.model, source=self.cfg.filename, path="model")
        if not isinstance(model, VLAModel):
            raise ConfigError(f"{self.cfg.filename}: model built a {type(model).__name__}, not a "
                              "vla.models.base.VLAModel (the model contract)")
        self._load_pretrained(model)
        if self.options.enable_gradient_checkpointing:
            parallelize.apply_activation_checkpointing(model, self.log)
        return model.to(self.dist.device)

    def _load_pretrained(self, model: nn.Module) -> None:
        """The model's pretrained load (strict unless its config says otherwise); its report, by name, goes
        to the log and to `pretrained_load_report.json` in the work dir, also when the load fails."""
        path = self.work_dir / PRETRAINED_REPORT_FILENAME
        try:
            report = model.load_pretrained()
        except CheckpointMismatchError as err:
            if self.dist.is_main:
                err.report.write(path)
                log.error("pretrained load refused; report: %s", path)
            raise
        if report is None:
            return
        if self.dist.is_main:
            report.write(path)
        self.log(f"pretrained weights {report.source}: {report.summary()} (report: {path})")

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """AdamW over trainable parameters only; no decay on biases and norms (1-D tensors)."""
        decay, no_decay = [], []
        for _, p in model.named_parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
        if not decay and not no_decay:
            raise ConfigError(f"{self.cfg.filename}: the model has no trainable parameters (all frozen)")
        groups = [{"params": decay, "weight_decay": self.options.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=self.options.learning_rate)



@register
class DDPTrainRunner(BaseTrainRunner):
    """DistributedDataParallel (gloo on CPU, NCCL on GPU). `sharding_strategy` is accepted and unused
    (FluxVLA's LoRA config keeps the full-finetune runner keys); `find_unused_parameters` is for
    models whose trainable parameters do not all take part in every forward.
    """

    def wrap(self, model: nn.Module) -> nn.Module:
        return parallelize.apply_ddp(model, self.dist, self.options.find_unused_parameters)

    def no_sync(self, model: nn.Module, skip_sync: bool):
        if skip_sync and hasattr(model, "no_sync"):
            return model.no_sync()
        return contextlib.nullcontext()


@register
class FSDPTrainRunner(BaseTrainRunner):
    """FSDP2 (`torch.distributed.fsdp.fully_shard`) per block, then the root (trainer/parallelize.py).

    Blocks are instances of the model's `block_types`, else every element of its `nn.ModuleList`s.
    `sharding_strategy`: full-shard reshards parameters after forward, shard-grad-op keeps them
    gathered until backward, no-shard replicates (HSDP with a shard group of one). Mixed precision
    gathers parameters in the low dtype, keeps fp32 master weights, reduces gradients in fp32, and
    runs forward under autocast too: models make fp32 tensors mid-forward (noise, sinusoidal time
    embeddings) that meet bf16 weights.
    """

    def wrap(self, model: nn.Module) -> nn.Module:
        return parallelize.apply_fsdp(model, self.dist, self.options.sharding_strategy, self.options.autocast_dtype)

    def no_sync(self, model: nn.Module, skip_sync: bool):
        model.set_requires_gradient_sync(not skip_sync)
        return contextlib.nullcontext()
