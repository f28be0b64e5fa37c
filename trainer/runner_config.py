"""`RunnerConfig`: the `runner` section's parameters, validated once.

The names are FluxVLA's runner parameters (FluxVLA's `DDPTrainRunner` / `FSDPTrainRunner`), plus
`max_steps`, `save_step_interval`, `grad_accumulation_steps`, `seed`, `keep_train_states`,
`find_unused_parameters` and `resume` (the `--resume` flag). `from_params` refuses an unknown name
(suggesting the closest) and a bad value, naming `<config>: runner.<key>`; every other module of the
trainer reads the typed fields.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from trainer.schedulers import SCHEDULERS
from vla.config import ConfigError

MIXED_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
SHARDING_STRATEGIES = ("full-shard", "shard-grad-op", "no-shard")
DEFAULT_METRIC = {"type": "VLAMetric", "active_trackers": ("jsonl",)}


_NUMERIC = {"max_epochs": int, "learning_rate": float, "weight_decay": float, "max_grad_norm": float,
            "warmup_ratio": float, "grad_accumulation_steps": int, "save_epoch_interval": int,
            "save_step_interval": int, "max_steps": int, "seed": int, "keep_train_states": int}
_FLAGS = ("enable_gradient_checkpointing", "enable_mixed_precision_training", "change_key_name",
          "find_unused_parameters", "resume")


@dataclass(frozen=True)
class RunnerConfig:
    collator: Mapping[str, Any]                      # required (FluxVLA's configs use DictCollator)
    max_epochs: int = 1
    learning_rate: float = 2e-5
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0                # None or 0: no clipping
    lr_scheduler_type: str = "constant"
    warmup_ratio: float = 0.0
    grad_accumulation_steps: int | None = None       # derived from the batch sizes; if given, must agree
    save_epoch_interval: int = 1
    save_step_interval: int | None = None
    max_steps: int | None = None
    metric: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_METRIC))
    sampler: Any = None                              # only None: the dataset orders itself per rank
    tokenizer: Any = None                            # FluxVLA's configs list it; the dataset transforms carry their own
    enable_gradient_checkpointing: bool = False
    enable_mixed_precision_training: bool = False
    mixed_precision_dtype: str = "bf16"
    sharding_strategy: str = "full-shard"            # FSDP only; DDP accepts and ignores it (FluxVLA's LoRA config)
    change_key_name: bool = False                    # only False: checkpoint keys are the model's own names
    seed: int = 42
    keep_train_states: int = 2
    find_unused_parameters: bool = False             # DDP: for models whose trainable parameters skip some forwards
    resume: bool = False

    @property
    def mixed_dtype(self) -> torch.dtype:
        return MIXED_DTYPES[self.mixed_precision_dtype]

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype forward runs in under autocast, or None (no mixed precision)."""
        if not self.enable_mixed_precision_training or self.mixed_dtype == torch.float32:
            return None
        return self.mixed_dtype

    @classmethod
    def from_params(cls, params: Mapping[str, Any], where: str = "config: runner") -> "RunnerConfig":
        names = [f.name for f in dataclasses.fields(cls)]
        for key in params:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=3, cutoff=0.7)
                hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                raise ConfigError(f"{where}.{key}: unknown runner parameter {key!r}{hint}")
        if params.get("collator") is None:
            raise ConfigError(f"{where}.collator is required (FluxVLA's configs use DictCollator)")
        values = dict(params)
        if values.get("metric") is None:
            values.pop("metric", None)
        cls(**values).validate(where)   # names and choices first, so a bad value is named before coercion
        for name, kind in _NUMERIC.items():
            if values.get(name) is not None:
                values[name] = kind(values[name])
        for name in _FLAGS:
            if name in values:
                values[name] = bool(values[name])
        if not values.get("max_grad_norm", 1.0):
            values["max_grad_norm"] = None   # 0 or None: no clipping
        return cls(**values)

    def validate(self, where: str) -> None:
        if self.lr_scheduler_type not in SCHEDULERS:
            raise ConfigError(f"{where}.lr_scheduler_type: {self.lr_scheduler_type!r} is not one of {SCHEDULERS}")
        if self.mixed_precision_dtype not in MIXED_DTYPES:
            raise ConfigError(f"{where}.mixed_precision_dtype: {self.mixed_precision_dtype!r} is not one of "
                              f"{sorted(MIXED_DTYPES)}")
        if self.sharding_strategy not in SHARDING_STRATEGIES:
            raise ConfigError(f"{where}.sharding_strategy: {self.sharding_strategy!r} is not one of "
                              f"{SHARDING_STRATEGIES}")
        if self.enable_mixed_precision_training and self.mixed_precision_dtype == "fp16":
            raise ConfigError(f"{where}.mixed_precision_dtype='fp16': fp16 training needs loss scaling (a "
                              "GradScaler), which this runner does not run; use 'bf16' (the guide's) or 'fp32'")
        if self.change_key_name:
            raise ConfigError(f"{where}.change_key_name=True: checkpoints are written under the model's own key "
                              "names and read by name_mapping; renaming on save is not supported (use False)")
        if self.sampler is not None:
            raise ConfigError(f"{where}.sampler: only None is supported; DistributedRepeatingDataset already "
                              "gives each rank its share of every epoch")
        for name in ("max_epochs", "save_epoch_interval"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{where}.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("save_step_interval", "max_steps", "grad_accumulation_steps"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ConfigError(f"{where}.{name} must be >= 1 or None, got {value}")
