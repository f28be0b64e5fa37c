"""LoRA through peft, in place, for any of our models (π0, π0.5, GR00T).

    apply_lora(model, rank, target_modules, dropout=0.0, alpha=None, trainable_modules=()) -> model
        Inject peft LoRA adapters into the modules named by `target_modules` (peft matching: a module
        whose dotted name equals an entry or ends with '.' + entry, e.g. 'q_proj', 'state_proj.projector').
        Afterwards only the adapters and the parameters under `trainable_modules` (dotted prefixes; LoRA base
        weights inside them stay frozen) require grad. `alpha` defaults to `rank` (scale 1, as openpi).
        The model object is returned modified; its state dict gains `<m>.base_layer.weight`,
        `<m>.lora_A.default.weight`, `<m>.lora_B.default.weight`.
    merge_lora(model) -> model
        Fold every adapter into its base weight (W + B·A·scale) and put the plain `nn.Linear` back, so the
        state dict has the original key names (for serving, or a merged checkpoint).
    has_lora(model) -> bool
    freeze(module) / trainable_names(model) -> list[str]
"""
from __future__ import annotations

from typing import Iterable, Sequence

from torch import nn


def freeze(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def trainable_names(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def _lora_layer_type():
    from peft.tuners.lora import LoraLayer

    return LoraLayer


def has_lora(model: nn.Module) -> bool:
    layer = _lora_layer_type()
    return any(isinstance(m, layer) for m in model.modules())


def apply_lora(model: nn.Module, rank: int, target_modules: Sequence[str], dropout: float = 0.0,
               alpha: float | None = None, trainable_modules: Iterable[str] = ()) -> nn.Module:
    from peft import LoraConfig, inject_adapter_in_model

    if int(rank) <= 0:
        raise ValueError(f"lora_rank must be positive, got {rank}")
    targets = list(target_modules or [])
    if not targets:
        raise ValueError("use_lora=True needs lora_target_modules (e.g. ['q_proj', 'k_proj', 'v_proj', 'o_proj'])")
    names = [n for n, _ in model.named_modules()]
    unmatched = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if unmatched:
        raise ValueError(f"lora_target_modules {unmatched} match no module of {type(model).__name__}")
    config = LoraConfig(r=int(rank), lora_alpha=float(alpha if alpha is not None else rank),
                        lora_dropout=float(dropout), target_modules=targets, bias="none")
    inject_adapter_in_model(config, model)
    prefixes = tuple(p.rstrip(".") for p in trainable_modules)
    for name, param in model.named_parameters():
        if ".lora_" in name:
            param.requires_grad_(True)
        elif prefixes and ".base_layer." not in name and any(
                name == p or name.startswith(p + ".") for p in prefixes):
            param.requires_grad_(True)
        else:
            param.requires_grad_(False)
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    layer = _lora_layer_type()
    # Collect first: replacing children while iterating named_modules would skip some.
    wrapped = [(name, m) for name, m in model.named_modules() if isinstance(m, layer)]
    for name, module in wrapped:
        module.merge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.get_base_layer())
    for m in model.modules():  # weights changed without a version bump: drop cached inference weights
        cache = getattr(m, "_ops_cache", None)
        if isinstance(cache, dict):
            cache.clear()
    return model
