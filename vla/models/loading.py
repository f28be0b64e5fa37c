"""Checkpoint loading with the configs' `name_mapping` (our key prefix -> checkpoint key prefix).

    read_state_dict(path) -> dict[str, Tensor]
        `.safetensors` (safetensors.torch.load_file) or `.pt`/`.pth`/`.bin` (torch.load weights_only=True;
        a dict wrapping the weights under 'state_dict' / 'model' / 'module' is unwrapped).
    remap_state_dict(state_dict, name_mapping) -> dict[str, Tensor]
        rename checkpoint keys to our names: for `{ours: theirs}`, a key equal to `theirs` or starting with
        `theirs + '.'` gets that prefix replaced by `ours`; the longest matching prefix wins. Keys no
        mapping covers keep their name (and surface as unexpected if the model has no such key).
    load_weights(model, path_or_state_dict, name_mapping=None, strict=False, ignore=None, allow_missing=())
        -> LoadReport
        copy matching tensors into `model`; report loaded / missing / unexpected / shape-mismatched keys by name.
        `ignore` {checkpoint key: reason}: tensors the release carries but the model never uses (reported as
        ignored, not unexpected). `allow_missing`: our key names or dotted prefixes that may be missing or
        shape-mismatched (a head meant to start new); they keep their initialisation and are reported as allowed.
        strict=True raises `CheckpointMismatchError` (with the report) before touching the model when anything
        else is missing, mismatched or unexpected.
        A model wrapped by peft LoRA matches plain checkpoint names (`q_proj.weight` fills
        `q_proj.base_layer.weight`); LoRA adapter weights are never reported missing.
    LoadReport(missing, unexpected, mismatched, loaded, loaded_names, ignored, allowed)
        .ok (nothing missing/mismatched/unexpected outside the allow list), .summary(), .to_dict(),
        .write(path) (JSON, atomically)
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from vla.checkpoint import torch_load_weights_only
from vla.errors import VLAError
from vla.io import write_json

log = logging.getLogger(__name__)

_WRAPPER_KEYS = ("state_dict", "model", "module")


class CheckpointNotFoundError(VLAError, FileNotFoundError):
    """A pretrained or checkpoint path that does not exist."""


class CheckpointFileError(VLAError, ValueError):
    """A checkpoint file that is not a state dict of tensors in a format we read."""


class CheckpointMismatchError(VLAError, RuntimeError):
    """A strict load found missing, unexpected or shape-mismatched keys."""

    def __init__(self, report: "LoadReport", source: str, hint: str = ""):
        self.report = report
        super().__init__(f"{source}: checkpoint does not match the model: {report.summary()}"
                         + (f". Hint: {hint}" if hint else "")
                         + ". Name a head that is meant to start new in the model's `allow_missing_keys`")


@dataclass
class LoadReport:
    missing: list[str] = field(default_factory=list)  # our names
    unexpected: list[str] = field(default_factory=list)  # the checkpoint's names
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (our name, checkpoint, model)
    loaded: int = 0
    loaded_names: list[str] = field(default_factory=list)  # our names
    ignored: dict[str, str] = field(default_factory=dict)  # checkpoint name -> why the model never uses it
    allowed: list[str] = field(default_factory=list)  # missing / mismatched names the allow list covers
    source: str = ""

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 8) -> str:
        def head(items: list) -> str:
            shown = ", ".join(str(i) for i in items[:limit])
            return shown + (f", ... (+{len(items) - limit})" if len(items) > limit else "")

        parts = [f"loaded {self.loaded}"]
        if self.missing:
            parts.append(f"missing {len(self.missing)}: {head(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected {len(self.unexpected)}: {head(self.unexpected)}")
        if self.mismatched:
            parts.append(f"shape mismatch {len(self.mismatched)}: "
                         + head([f"{k} checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched]))
        if self.allowed:
            parts.append(f"left at initialisation (allow list) {len(self.allowed)}: {head(self.allowed)}")
        if self.ignored:
            parts.append(f"ignored {len(self.ignored)} (unused by the model): {head(sorted(self.ignored))}")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {"source": self.source, "ok": self.ok, "loaded": self.loaded, "loaded_names": self.loaded_names,
                "missing": self.missing, "unexpected": self.unexpected,
                "mismatched": [{"name": k, "checkpoint": list(a), "model": list(b)} for k, a, b in self.mismatched],
                "allowed": self.allowed, "ignored": self.ignored}

    def write(self, path: str | os.PathLike) -> Path:
        write_json(path, self.to_dict())
        return Path(path)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:  # noqa: BLE001 - safetensors' header/size errors: name the file
            raise CheckpointFileError(f"{path}: cannot load this safetensors file: {exc}") from None
    if path.suffix in (".pt", ".pth", ".bin"):
        obj = torch_load_weights_only(path, CheckpointFileError)
        for key in _WRAPPER_KEYS:  # unwrap {'state_dict': {...}} style files
            if isinstance(obj, dict) and isinstance(obj.get(key), dict) and len(obj) <= 3:
                obj = obj[key]
                break
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointFileError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
        return obj
    raise CheckpointFileError(f"{path}: unsupported checkpoint format {path.suffix!r} (use .safetensors, .pt, .pth or .bin)")


def _prefix_pairs(name_mapping: Mapping[str, str] | None) -> list[tuple[str, str]]:
    # Longest checkpoint prefix first, so 'a.b' wins over 'a' when both are mapped.
    pairs = ((theirs.rstrip("."), ours.rstrip(".")) for ours, theirs in (name_mapping or {}).items())
    return sorted(pairs, key=lambda p: len(p[0]), reverse=True)


def _rename(key: str, pairs: list[tuple[str, str]]) -> str:
    for theirs, ours in pairs:
        if key == theirs or key.startswith(theirs + "."):
            return ours + key[len(theirs):]
    return key


def remap_state_dict(state_dict: Mapping[str, torch.Tensor],
                     name_mapping: Mapping[str, str] | None) -> dict[str, torch.Tensor]:
    pairs = _prefix_pairs(name_mapping)
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = _rename(key, pairs)
        if new in out:
            raise ValueError(f"name_mapping maps two checkpoint keys onto {new!r} (one is {key!r})")
        out[new] = value
    return out


def _canonical(name: str) -> str:
    # peft LoRA wraps a Linear as `<name>.base_layer`; checkpoints name the plain module.
    return name.replace(".base_layer.", ".")


def _is_adapter(name: str) -> bool:
    return ".lora_" in name


def _covered(name: str, allow: Sequence[str]) -> bool:
    name = _canonical(name)
    return any(name == a or name.startswith(a.rstrip(".") + ".") for a in allow)


def load_weights(model: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor],
                 name_mapping: Mapping[str, str] | None = None, strict: bool = False,
                 ignore: Mapping[str, str] | None = None, allow_missing: Sequence[str] = (),
                 source_name: str | None = None) -> LoadReport:
    where = source_name or (str(source) if not isinstance(source, Mapping) else "<state dict>")
    raw = read_state_dict(source) if not isinstance(source, Mapping) else source
    ignore = dict(ignore or {})
    kept = {k: v for k, v in raw.items() if k not in ignore}
    ckpt = remap_state_dict(kept, name_mapping)
    pairs = _prefix_pairs(name_mapping)
    origin = {_rename(k, pairs): k for k in kept}  # report unexpected keys under the checkpoint's own names
    own = model.state_dict(keep_vars=True)
    by_canonical = {_canonical(k): k for k in own if not _is_adapter(k)}
    report = LoadReport(source=where, ignored={k: ignore[k] for k in raw if k in ignore})
    allow = [str(a) for a in allow_missing]
    to_load: dict[str, torch.Tensor] = {}
    for key, value in ckpt.items():
        target = key if key in own else by_canonical.get(_canonical(key))
        if target is None:
            report.unexpected.append(origin[key])
        elif tuple(own[target].shape) != tuple(value.shape):
            if _covered(target, allow):
                report.allowed.append(target)
            else:
                report.mismatched.append((target, tuple(value.shape), tuple(own[target].shape)))
        else:
            to_load[target] = value
    mismatched = {_canonical(k) for k, _, _ in report.mismatched} | {_canonical(k) for k in report.allowed}
    missing = sorted(k for k in own if k not in to_load and not _is_adapter(k) and _canonical(k) not in mismatched)
    report.allowed += [k for k in missing if _covered(k, allow)]
    report.missing = [k for k in missing if not _covered(k, allow)]
    if strict and not report.ok:
        raise CheckpointMismatchError(report, where)
    # assign=True lets a meta-device model take real tensors; otherwise copy in place (keeps dtype/device).
    on_meta = any(t.is_meta for t in own.values())
    model.load_state_dict(to_load, strict=False, assign=on_meta)
    report.loaded, report.loaded_names = len(to_load), sorted(to_load)
    (log.info if report.ok else log.warning)("loaded %s: %s", where, report.summary())
    return report
