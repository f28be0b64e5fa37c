"""Parallelism and memory savers, applied to a model from outside it (torchtitan's `parallelize_*` style).

    apply_activation_checkpointing(model, log)      recompute activations in backward
    apply_ddp(model, dist, find_unused_parameters)  DistributedDataParallel (one process: unchanged)
    apply_fsdp(model, dist, sharding_strategy, param_dtype)
                                                    FSDP2 `fully_shard` per block, then the root
    fsdp_blocks(model)                              the blocks FSDP shards one by one

A model never sees its wrappers. It declares, as data, which submodule classes are its blocks
(`block_types`, the model contract in vla/models/base.py); without them every element of its
`nn.ModuleList`s is a block. Its own recompute switch, if it has one, is
`gradient_checkpointing_enable()` (transformers' name); and it caches weights derived for inference
only while `weight_caching` is true, which FSDP turns off because it refills parameter storage
in place.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from trainer.distributed import DistInfo


def fsdp_blocks(model: nn.Module) -> list[nn.Module]:
    """Instances of `model.block_types`, innermost first; else every ModuleList element with parameters."""
    types = tuple(getattr(model, "block_types", ()) or ())
    if types:
        return [m for m in reversed(list(model.modules())) if m is not model and isinstance(m, types)]
    blocks = []
    for module in model.modules():
        if isinstance(module, nn.ModuleList):
            blocks.extend(m for m in module if any(True for _ in m.parameters()))
    return blocks


def apply_activation_checkpointing(model: nn.Module, log: Callable[[str], None]) -> None:
    """The model's own switch, else those of its Hugging Face submodules; say so if there is none."""
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


def apply_ddp(model: nn.Module, info: DistInfo, find_unused_parameters: bool = False) -> nn.Module:
    """DistributedDataParallel (gloo on CPU, NCCL on GPU); a single process keeps the bare model."""
    if not info.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


def apply_fsdp(model: nn.Module, info: DistInfo, sharding_strategy: str = "full-shard",
               param_dtype: torch.dtype | None = None) -> nn.Module:
    """FSDP2 per block, then the root. full-shard reshards parameters after forward, shard-grad-op keeps
    them gathered until backward, no-shard replicates (HSDP with a shard group of one). `param_dtype`
    gathers parameters in a low dtype and reduces gradients in fp32 (fp32 master weights stay)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if not dist.is_initialized():  # one process without torchrun: a group of one keeps one code path
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    world, device_type = dist.get_world_size(), info.device.type
    if sharding_strategy == "no-shard":
        mesh = init_device_mesh(device_type, (world, 1), mesh_dim_names=("replicate", "shard"))
    else:
        mesh = init_device_mesh(device_type, (world,))
    kwargs = {"mesh": mesh, "reshard_after_forward": sharding_strategy != "shard-grad-op"}
    if param_dtype is not None and param_dtype != torch.float32:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    if hasattr(model, "weight_caching"):
        model.weight_caching = False
    for block in fsdp_blocks(model):
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model
