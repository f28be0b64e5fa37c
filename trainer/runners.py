"""`DDPTrainRunner` and `FSDPTrainRunner`: FluxVLA's runner names, one training loop, two wrappings.

The loop (`BaseTrainRunner.run`) is shared; a subclass only says how to wrap the model
(`wrap`) and how to stop gradient sync on accumulation micro-steps (`no_sync`).

Batch arithmetic (as in OpenVLA/prismatic, which FluxVLA follows): `train_dataloader.batch_size`
is the global batch per optimizer step and must equal per_device_batch_size × world size ×
grad_accumulation_steps; accumulation is derived from it, and an explicit runner
`grad_accumulation_steps` that disagrees is an error.

Resume is exact: a checkpoint is taken after an optimizer step and holds model, optimizer,
scheduler, every rank's RNG state and the sampler position (epoch, optimizer steps into it);
the DataLoader uses its own generator, so building it never draws from the global RNG.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)
from torch.utils.data import DataLoader

from vla import checkpoint as ckpt
from vla.config import Config, ConfigError, build, register
from vla.data.distributed import DistributedRepeatingDataset
from vla.models.loading import CheckpointMismatchError
from vla.normalize import STATISTICS_FILENAME
from vla.run_info import write_run_info

from trainer.distributed import DistInfo, all_reduce_mean, barrier, init_distributed
from trainer.metrics import VLAMetric  # noqa: F401 - registers VLAMetric
from trainer.schedulers import SCHEDULERS, build_scheduler
from trainer.state import rng_state, seed_everything, set_rng_state

PRETRAINED_REPORT_FILENAME = "pretrained_load_report.json"


def bind_to_model(dataset: Any, model: nn.Module) -> None:
    """Give the data transforms what only the model knows (the vision tokens per image)."""
    tokens = getattr(model, "tokens_per_image", None)
    for part in getattr(dataset, "datasets", [dataset]):
        for transform in getattr(part, "transforms", []):
            if hasattr(transform, "bind_model") and tokens is not None:
                transform.bind_model(tokens_per_image=tokens)

log = logging.getLogger(__name__)

MIXED_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
SHARDING_STRATEGIES = ("full-shard", "shard-grad-op", "no-shard")


class BaseTrainRunner:
    """Train `cfg.model` on `cfg.train_dataloader` into `work_dir` (see module doc)."""

    # Built by the runner itself once it knows the work dir and rank (or never: tokenizer).
    __config_lazy__ = ("collator", "metric", "tokenizer", "sampler")

    def __init__(self, config: Config | Mapping[str, Any], work_dir: str | os.PathLike, *, max_epochs: int = 1,
                 learning_rate: float = 2e-5, weight_decay: float = 0.0, max_grad_norm: float | None = 1.0,
                 lr_scheduler_type: str = "constant", warmup_ratio: float = 0.0,
                 grad_accumulation_steps: int | None = None, save_epoch_interval: int = 1,
                 save_step_interval: int | None = None, max_steps: int | None = None,
                 collator: Mapping[str, Any] | None = None, metric: Mapping[str, Any] | None = None,
                 sampler: Any = None, tokenizer: Any = None, enable_gradient_checkpointing: bool = False,
                 enable_mixed_precision_training: bool = False, mixed_precision_dtype: str = "bf16",
                 sharding_strategy: str = "full-shard", change_key_name: bool = False, seed: int = 42,
                 keep_train_states: int = 2, find_unused_parameters: bool = False, resume: bool = False,
                 dist_info: DistInfo | None = None):
        where = f"{getattr(config, 'filename', None) or 'config'}: runner"
        if lr_scheduler_type not in SCHEDULERS:
            raise ConfigError(f"{where}.lr_scheduler_type: {lr_scheduler_type!r} is not one of {SCHEDULERS}")
        if mixed_precision_dtype not in MIXED_DTYPES:
            raise ConfigError(f"{where}.mixed_precision_dtype: {mixed_precision_dtype!r} is not one of "
                              f"{sorted(MIXED_DTYPES)}")
        if sharding_strategy not in SHARDING_STRATEGIES:
            raise ConfigError(f"{where}.sharding_strategy: {sharding_strategy!r} is not one of {SHARDING_STRATEGIES}")
        if sampler is not None:
            raise ConfigError(f"{where}.sampler: only None is supported; DistributedRepeatingDataset already "
                              "gives each rank its share of every epoch")
        for name, value in (("max_epochs", max_epochs), ("save_epoch_interval", save_epoch_interval)):
            if int(value) < 1:
                raise ConfigError(f"{where}.{name} must be >= 1, got {value}")
        for name, value in (("save_step_interval", save_step_interval), ("max_steps", max_steps),
                            ("grad_accumulation_steps", grad_accumulation_steps)):
            if value is not None and int(value) < 1:
                raise ConfigError(f"{where}.{name} must be >= 1 or None, got {value}")
        if collator is None:
            raise ConfigError(f"{where}.collator is required (FluxVLA's configs use DictCollator)")
        if enable_mixed_precision_training and mixed_precision_dtype == "fp16":
            raise ConfigError(f"{where}.mixed_precision_dtype='fp16': fp16 training needs loss scaling (a "
                              "GradScaler), which this runner does not run; use 'bf16' (the guide's) or 'fp32'")
        if change_key_name:
            raise ConfigError(f"{where}.change_key_name=True: checkpoints are written under the model's own key "
                              "names and read by name_mapping; renaming on save is not supported (use False)")
        self.cfg = config if isinstance(config, Config) else Config(dict(config))
        self.where = where
        self.work_dir = Path(work_dir)
        self.max_epochs = int(max_epochs)
        self.learning_rate = float(learning_rate)
        self.weight_decay = float(weight_decay)
        self.max_grad_norm = None if not max_grad_norm else float(max_grad_norm)
        self.lr_scheduler_type = lr_scheduler_type
        self.warmup_ratio = float(warmup_ratio)
        self.requested_accumulation = None if grad_accumulation_steps is None else int(grad_accumulation_steps)
        self.save_epoch_interval = int(save_epoch_interval)
        self.save_step_interval = None if save_step_interval is None else int(save_step_interval)
        self.max_steps = None if max_steps is None else int(max_steps)
        self.collator_cfg = collator
        self.metric_cfg = dict(metric or dict(type="VLAMetric", active_trackers=("jsonl",)))
        self.tokenizer_cfg = tokenizer  # FluxVLA's configs list it
        if tokenizer is not None:  # the transforms carry their own; built here so a bad path fails at once
            self.tokenizer = build(tokenizer, source=getattr(config, "filename", None), path="runner.tokenizer")
        self.enable_gradient_checkpointing = bool(enable_gradient_checkpointing)
        self.mixed_precision = bool(enable_mixed_precision_training)
        self.mixed_dtype = MIXED_DTYPES[mixed_precision_dtype]
        self.sharding_strategy = sharding_strategy
        self.change_key_name = bool(change_key_name)
        self.seed = int(seed)
        self.keep_train_states = int(keep_train_states)
        self.find_unused_parameters = bool(find_unused_parameters)
        self.resume = bool(resume)
        self.dist = dist_info or init_distributed()

    # ---- subclass hooks -------------------------------------------------------------------
    def wrap(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def no_sync(self, model: nn.Module, skip_sync: bool):
        return contextlib.nullcontext()

    def autocast(self):
        if not self.mixed_precision or self.mixed_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.dist.device.type, dtype=self.mixed_dtype)

    # ---- setup ------------------------------------------------------------------------------
    def _log(self, message: str) -> None:
        if self.dist.is_main:
            log.info("[vla-train] %s", message)

    def batch_plan(self) -> tuple[int, int, int]:
        """(global batch, per-device batch, accumulation) checked against the world size."""
        dl = self.cfg.get("train_dataloader")
        if not isinstance(dl, Mapping):
            raise ConfigError(f"{self.cfg.filename}: no train_dataloader section")
        per_device = dl.get("per_device_batch_size")
        if not isinstance(per_device, int) or per_device < 1:
            raise ConfigError(f"{self.cfg.filename}: train_dataloader.per_device_batch_size must be a positive "
                              f"int, got {per_device!r}")
        world = self.dist.world_size
        global_batch = dl.get("batch_size")
        if global_batch is None:
            global_batch = per_device * world * (self.requested_accumulation or 1)
        per_step = per_device * world
        if not isinstance(global_batch, int) or global_batch < 1 or global_batch % per_step:
            raise ConfigError(
                f"{self.cfg.filename}: train_dataloader.batch_size={global_batch!r} must be a multiple of "
                f"per_device_batch_size ({per_device}) x world size ({world}) = {per_step}; it equals "
                f"per_device_batch_size x world size x grad_accumulation_steps")
        accumulation = global_batch // per_step
        if self.requested_accumulation is not None and self.requested_accumulation != accumulation:
            raise ConfigError(
                f"{self.where}.grad_accumulation_steps={self.requested_accumulation} disagrees with "
                f"train_dataloader.batch_size={global_batch} / (per_device_batch_size {per_device} x world size "
                f"{world}) = {accumulation}")
        return global_batch, per_device, accumulation

    def build_dataset(self) -> Any:
        """Build the dataset with the run's statistics bound into its transforms: given in the config,
        loaded from the work dir (resume; ranks other than 0), or computed once by rank 0, which
        writes dataset_statistics.json and run_info.json."""
        ds_cfg = copy.deepcopy(dict(self.cfg.train_dataloader["dataset"]))
        stats_path = self.work_dir / STATISTICS_FILENAME
        given = ds_cfg.get("dataset_statistics") is not None
        source = self.cfg.filename

        def _build(cfg):
            return build(cfg, source=source, path="train_dataloader.dataset")

        if given or (self.resume and stats_path.is_file()):
            if not given:
                ds_cfg["dataset_statistics"] = str(stats_path)
            dataset = _build(ds_cfg)
            if self.dist.is_main and not stats_path.is_file():
                dataset.save_statistics(self.work_dir)
        elif self.dist.is_main:
            dataset = _build(ds_cfg)
            dataset.save_statistics(self.work_dir)
            barrier()
        else:
            barrier()  # wait for rank 0's statistics file, then read it instead of recomputing
            dataset = _build({**ds_cfg, "dataset_statistics": str(stats_path)})
        if not isinstance(dataset, DistributedRepeatingDataset):
            raise ConfigError(f"{source}: train_dataloader.dataset must be a DistributedRepeatingDataset "
                              f"(resumable order and statistics), got {type(dataset).__name__}")
        if self.dist.is_main:
            write_run_info(self.work_dir, dataset.run_info())
        return dataset

    def build_model(self) -> nn.Module:
        seed_everything(self.seed)  # identical initial weights on every rank (FSDP does not broadcast)
        model = build(self.cfg.model, source=self.cfg.filename, path="model")
        if not isinstance(model, nn.Module):
            raise ConfigError(f"{self.cfg.filename}: model built a {type(model).__name__}, not an nn.Module")
        if hasattr(model, "load_pretrained"):
            self._load_pretrained(model)
        if self.enable_gradient_checkpointing:
            _enable_gradient_checkpointing(model, self._log)
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
        self._log(f"pretrained weights {report.source}: {report.summary()} (report: {path})")

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """AdamW over trainable parameters only; no decay on biases and norms (1-D tensors)."""
        decay, no_decay = [], []
        for _, p in model.named_parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
        if not decay and not no_decay:
            raise ConfigError(f"{self.cfg.filename}: the model has no trainable parameters (all frozen)")
        groups = [{"params": decay, "weight_decay": self.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=self.learning_rate)

    def _loader(self, dataset: Any, collator: Any, per_device: int, epoch: int) -> DataLoader:
        workers = int(self.cfg.train_dataloader.get("per_device_num_workers", 0) or 0)
        generator = torch.Generator().manual_seed(self.seed + epoch)  # leaves the global RNG alone
        return DataLoader(dataset, batch_size=per_device, collate_fn=collator, num_workers=workers,
                          generator=generator, pin_memory=self.dist.device.type == "cuda",
                          persistent_workers=False)

    # ---- checkpoints ------------------------------------------------------------------------
    def save(self, model: nn.Module, optimizer, scheduler, name: str, *, step: int, epoch: int,
             step_in_epoch: int) -> None:
        """Collective: every rank gathers, rank 0 writes weights + optimizer, each rank its RNG."""
        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_sd = get_model_state_dict(model, options=opts)
        optim_sd = get_optimizer_state_dict(model, optimizer, options=opts)
        if self.dist.is_main:
            ckpt.save_weights(self.work_dir, name, model_sd)
            lora = {k: v for k, v in model_sd.items() if "lora_" in k}
            if lora:
                ckpt.save_adapter(self.work_dir, name, lora)
            trainer_state = {"scheduler": scheduler.state_dict(), "step": step, "epoch": epoch,
                             "step_in_epoch": step_in_epoch, "world_size": self.dist.world_size,
                             "seed": self.seed}
            ckpt.save_train_state(self.work_dir, name, {"optimizer.pt": optim_sd, "trainer.pt": trainer_state})
        barrier()
        ckpt.save_train_state(self.work_dir, name, {f"rng_rank{self.dist.rank}.pt": rng_state()})
        barrier()
        if self.dist.is_main:
            ckpt.commit(self.work_dir, name, step=step, epoch=epoch, keep_train_states=self.keep_train_states,
                        extra={"world_size": self.dist.world_size, "step_in_epoch": step_in_epoch})
        barrier()

    def restore(self, model: nn.Module, optimizer, scheduler) -> tuple[int, int, int] | None:
        """Load the newest complete checkpoint; returns (step, epoch, step_in_epoch) or None."""
        found = ckpt.find_resumable(self.work_dir)
        if found is None:
            self._log(f"--resume: no complete checkpoint in {self.work_dir}; starting from step 0")
            return None
        state = ckpt.load_train_state_file(found, "trainer.pt")
        if state["world_size"] != self.dist.world_size:
            raise ConfigError(f"{found.state_dir}: saved with world size {state['world_size']}, resuming with "
                              f"{self.dist.world_size}; exact resume needs the same number of processes")
        opts = StateDictOptions(full_state_dict=True)
        set_model_state_dict(model, ckpt.load_weights(found.weights), options=opts)
        set_optimizer_state_dict(model, optimizer, ckpt.load_train_state_file(found, "optimizer.pt"), options=opts)
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(ckpt.load_train_state_file(found, f"rng_rank{self.dist.rank}.pt"))
        self._log(f"resumed from {found.weights.name} (step {state['step']}, epoch {state['epoch']})")
        return int(state["step"]), int(state["epoch"]), int(state["step_in_epoch"])

    def _prepare_work_dir(self) -> None:
        if self.dist.is_main:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            if not self.resume and ckpt.read_latest(self.work_dir) is not None:
                raise ConfigError(f"{self.work_dir} already holds a run (latest -> "
                                  f"{ckpt.read_latest(self.work_dir)}); pass --resume to continue it or "
                                  "choose another work dir")
            ckpt.remove_stale_temp_files(self.work_dir)
            self.cfg.dump(self.work_dir)
        barrier()

    # ---- the loop -----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self._prepare_work_dir()
        global_batch, per_device, accumulation = self.batch_plan()
        dataset = self.build_dataset()
        dataset.set_batch_size(per_device)
        collator = build(self.collator_cfg, source=self.cfg.filename, path="runner.collator")
        samples_per_rank = len(dataset)
        steps_per_epoch = samples_per_rank // per_device // accumulation
        if steps_per_epoch < 1:
            raise ConfigError(f"{self.cfg.filename}: an epoch has {samples_per_rank} samples per rank, fewer than "
                              f"one optimizer step needs (per_device_batch_size {per_device} x accumulation "
                              f"{accumulation})")
        total_steps = self.max_epochs * steps_per_epoch
        if self.max_steps is not None:
            total_steps = min(total_steps, self.max_steps)

        model = self.build_model()
        bind_to_model(dataset, model)
        model = self.wrap(model)
        optimizer = self.build_optimizer(model)
        scheduler = build_scheduler(optimizer, self.lr_scheduler_type, total_steps, self.warmup_ratio)

        step = epoch = step_in_epoch = 0
        restored = self.restore(model, optimizer, scheduler) if self.resume else None
        if restored is not None:
            step, epoch, step_in_epoch = restored
        else:
            seed_everything(self.seed + self.dist.rank)  # per-rank noise (flow-matching time, dropout)

        metric = build({**self.metric_cfg, "grad_accumulation_steps": accumulation}, source=self.cfg.filename,
                       path="runner.metric", work_dir=self.work_dir, rank=self.dist.rank)
        metric.start(config=self.cfg.to_plain(), resume_step=step if self.resume else None)
        self._log(f"world {self.dist.world_size} | global batch {global_batch} = {per_device} per device x "
                  f"{self.dist.world_size} x accumulation {accumulation} | {steps_per_epoch} steps/epoch | "
                  f"{total_steps} steps | from step {step}")

        progress = _progress(total_steps, step, self.dist.is_main)
        last_saved = step if restored is not None else -1
        trainable = [p for p in model.parameters() if p.requires_grad]
        model.train()
        while step < total_steps and epoch < self.max_epochs:
            dataset.set_epoch(epoch, skip=step_in_epoch * accumulation * per_device)
            batches = iter(self._loader(dataset, collator, per_device, epoch))
            while step_in_epoch < steps_per_epoch and step < total_steps:
                started = time.perf_counter()
                loss_sum = self._accumulate(model, batches, accumulation)
                grad_norm = _clip(trainable, self.max_grad_norm)
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
                epoch_save = step_in_epoch == steps_per_epoch and self._saves_after_epoch(epoch + 1)
                if self.save_step_interval and step % self.save_step_interval == 0 and not epoch_save:
                    self.save(model, optimizer, scheduler, ckpt.checkpoint_name(step=step), step=step,
                              epoch=epoch, step_in_epoch=step_in_epoch)
                    last_saved = step
            del batches  # shuts DataLoader workers down before the next epoch's start
            if step_in_epoch < steps_per_epoch:
                break  # max_steps reached inside the epoch
            epoch += 1
            step_in_epoch = 0
            if self._saves_after_epoch(epoch):
                self.save(model, optimizer, scheduler, ckpt.checkpoint_name(epoch=epoch), step=step, epoch=epoch,
                          step_in_epoch=0)
                last_saved = step
        if last_saved != step:
            self.save(model, optimizer, scheduler, ckpt.checkpoint_name(step=step), step=step, epoch=epoch,
                      step_in_epoch=step_in_epoch)
        progress.close()
        metric.finish()
        barrier()
        return {"step": step, "epoch": epoch, "latest": ckpt.read_latest(self.work_dir),
                "steps_per_epoch": steps_per_epoch, "accumulation": accumulation}

    def _saves_after_epoch(self, epochs_done: int) -> bool:
        return epochs_done % self.save_epoch_interval == 0 or epochs_done == self.max_epochs

    def _accumulate(self, model: nn.Module, batches: Iterator[dict], accumulation: int) -> torch.Tensor:
        """Forward/backward `accumulation` micro-batches; returns the sum of their (unscaled) losses."""
        total = torch.zeros((), dtype=torch.float32, device=self.dist.device)
        for micro in range(accumulation):
            batch = _to_device(next(batches), self.dist.device)
            with self.no_sync(model, skip_sync=micro < accumulation - 1):
                with self.autocast():
                    out = model(batch)
                loss = out["loss"] if isinstance(out, Mapping) else out
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss.item()} at a micro-batch; stopping before the "
                                             "optimizer step corrupts the weights")
                (loss / accumulation).backward()
            total += loss.detach().float()
        return total


@register
class DDPTrainRunner(BaseTrainRunner):
    """DistributedDataParallel (gloo on CPU, NCCL on GPU). `sharding_strategy` is accepted and unused
    (FluxVLA's LoRA config keeps the full-finetune runner keys); `find_unused_parameters` is for
    models whose trainable parameters do not all take part in every forward.
    """

    def wrap(self, model: nn.Module) -> nn.Module:
        if not self.dist.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids,
                                       find_unused_parameters=self.find_unused_parameters)

    def no_sync(self, model: nn.Module, skip_sync: bool):
        if skip_sync and hasattr(model, "no_sync"):
            return model.no_sync()
        return contextlib.nullcontext()


@register
class FSDPTrainRunner(BaseTrainRunner):
    """FSDP2 (`torch.distributed.fsdp.fully_shard`) per block, then the root.

    Blocks are the model's `fsdp_units()` if it has that method, else every element of its
    `nn.ModuleList`s (transformer layers). `sharding_strategy`: full-shard reshards parameters
    after forward, shard-grad-op keeps them gathered until backward, no-shard replicates
    (HSDP with a shard group of one). Mixed precision gathers parameters in the low dtype, keeps
    fp32 master weights, reduces gradients in fp32, and runs forward under autocast too: models
    make fp32 tensors mid-forward (noise, sinusoidal time embeddings) that meet bf16 weights.
    """

    def wrap(self, model: nn.Module) -> nn.Module:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        if not dist.is_initialized():  # one process without torchrun: a group of one keeps one code path
            dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        world, device_type = dist.get_world_size(), self.dist.device.type
        if self.sharding_strategy == "no-shard":
            mesh = init_device_mesh(device_type, (world, 1), mesh_dim_names=("replicate", "shard"))
        else:
            mesh = init_device_mesh(device_type, (world,))
        kwargs = {"mesh": mesh, "reshard_after_forward": self.sharding_strategy != "shard-grad-op"}
        if self.mixed_precision and self.mixed_dtype != torch.float32:
            kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=self.mixed_dtype, reduce_dtype=torch.float32)
        units = list(model.fsdp_units()) if hasattr(model, "fsdp_units") else _module_list_blocks(model)
        for unit in units:
            fully_shard(unit, **kwargs)
        fully_shard(model, **kwargs)
        return model

    def no_sync(self, model: nn.Module, skip_sync: bool):
        model.set_requires_gradient_sync(not skip_sync)
        return contextlib.nullcontext()


# ---- helpers -------------------------------------------------------------------------------------
def _module_list_blocks(model: nn.Module) -> list[nn.Module]:
    blocks = []
    for module in model.modules():
        if isinstance(module, nn.ModuleList):
            blocks.extend(m for m in module if any(True for _ in m.parameters()))
    return blocks


def _enable_gradient_checkpointing(model: nn.Module, log) -> None:
    """Use the model's own switch, else those of its Hugging Face submodules; say so if none."""
    if hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable()
        return
    enabled = 0
    for module in model.modules():
        if module is not model and getattr(module, "supports_gradient_checkpointing", False):
            module.gradient_checkpointing_enable()
            enabled += 1
    if not enabled:
        log(f"enable_gradient_checkpointing: {type(model).__name__} has no checkpointable submodules; ignored")


def _clip(params: list[torch.Tensor], max_norm: float | None) -> float:
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm else float("inf"))
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)


def _to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    if device.type == "cpu":
        return dict(batch)
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


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

