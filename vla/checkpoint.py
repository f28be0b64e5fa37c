"""Atomic checkpoints in a work dir: weights-only files, resumable train state, a manifest, `latest`.

Layout (docs/ARCHITECTURE.md, Work dir):

    work_dir/checkpoint_step_12.pt            model state dict only; torch.load(weights_only=True)
    work_dir/train_state/checkpoint_step_12/  optimizer.pt, trainer.pt (scheduler, counters, sampler
                                              position), rng_rank{r}.pt, manifest.json (written last)
    work_dir/latest                           "checkpoint_step_12.pt", rewritten after the manifest

Every file goes to a temp name beside its target, is fsynced and renamed into place. The
commit order (weights, state files, manifest, `latest`) means a process killed at any point
leaves `latest` naming the previous complete checkpoint, and `find_resumable` never returns
a checkpoint whose manifest is missing or whose files do not match it.
"""
from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from vla.errors import VLAError
from vla.io import JSONFileError, atomic_write, atomic_write_text, read_json, write_json

LATEST = "latest"
TRAIN_STATE_DIR = "train_state"
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
_NAME_RE = re.compile(r"^checkpoint_(epoch|step)_(\d+)\.pt$")


class CheckpointError(VLAError, RuntimeError):
    """A checkpoint that cannot be read or is incomplete; the message names the file."""


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> int:
    """torch.save to a temp file beside `path`, fsync, rename; returns the size in bytes.

    torch writes through a Python file object, so a failed write keeps its OSError (torch.save to a
    file name reports a full disk only as 'basic_ios::clear: iostream error'): the caller gets a
    `vla.io.WriteError` naming the file and the reason, and `latest` still names the previous
    complete checkpoint."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    return atomic_write(Path(path), write)


def checkpoint_name(*, epoch: int | None = None, step: int | None = None) -> str:
    if (epoch is None) == (step is None):
        raise ValueError("name a checkpoint by exactly one of epoch or step")
    return f"checkpoint_epoch_{epoch}.pt" if epoch is not None else f"checkpoint_step_{step}.pt"


def train_state_dir(work_dir: str | os.PathLike, name: str) -> Path:
    return Path(work_dir) / TRAIN_STATE_DIR / Path(name).stem


@dataclass
class Resumable:
    """A complete checkpoint: its weights file, its train-state dir and its manifest."""

    weights: Path
    state_dir: Path
    manifest: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.manifest["step"])


def save_weights(work_dir: str | os.PathLike, name: str, state_dict: Mapping[str, torch.Tensor]) -> Path:
    """Write `name` (a weights-only state dict of CPU tensors) into `work_dir`."""
    path = Path(work_dir) / name
    atomic_torch_save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, path)
    return path


def adapter_name(name: str) -> str:
    """`checkpoint_epoch_3.pt` -> `adapter_epoch_3.safetensors` (LoRA weights alone, for sharing)."""
    return Path(name).stem.replace("checkpoint_", "adapter_", 1) + ".safetensors"


def save_adapter(work_dir: str | os.PathLike, name: str, state_dict: Mapping[str, torch.Tensor]) -> Path:
    """Write the LoRA tensors of checkpoint `name` as safetensors, atomically."""
    from safetensors.torch import save_file

    path = Path(work_dir) / adapter_name(name)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp))
    return path


def save_train_state(work_dir: str | os.PathLike, name: str, files: Mapping[str, Any]) -> Path:
    """Write train-state files (filename -> object) for checkpoint `name`; no manifest yet."""
    state_dir = train_state_dir(work_dir, name)
    for filename, obj in files.items():
        atomic_torch_save(obj, state_dir / filename)
    return state_dir


def commit(work_dir: str | os.PathLike, name: str, *, step: int, epoch: int, extra: Mapping[str, Any] | None = None,
           keep_train_states: int = 2) -> Path:
    """Seal checkpoint `name`: write its manifest (sizes of every file), then point `latest` at it.

    Called once every rank has written its files. Older train states beyond `keep_train_states`
    are removed afterwards (weights files are kept: they are the run's outputs).
    """
    work_dir = Path(work_dir)
    weights = work_dir / name
    state_dir = train_state_dir(work_dir, name)
    files = {"weights": {"path": name, "bytes": weights.stat().st_size}}
    for f in sorted(state_dir.iterdir()):
        if f.is_file() and f.name != MANIFEST and not f.name.startswith("."):
            files[f.name] = {"path": f"{TRAIN_STATE_DIR}/{state_dir.name}/{f.name}", "bytes": f.stat().st_size}
    manifest = {"version": MANIFEST_VERSION, "checkpoint": name, "step": int(step), "epoch": int(epoch),
                "files": files, "time": time.time(), **dict(extra or {})}
    write_json(state_dir / MANIFEST, manifest)
    atomic_write_text(work_dir / LATEST, name + "\n")
    _prune_train_states(work_dir, keep=keep_train_states)
    return weights


def _verify(work_dir: Path, name: str) -> Resumable | None:
    """The checkpoint `name` if its manifest exists and every file it lists has the listed size."""
    state_dir = train_state_dir(work_dir, name)
    try:
        manifest = read_json(state_dir / MANIFEST)
    except (OSError, JSONFileError):
        return None
    if manifest.get("checkpoint") != name:
        return None
    for entry in manifest.get("files", {}).values():
        f = work_dir / entry["path"]
        if not f.is_file() or f.stat().st_size != entry["bytes"]:
            return None
    return Resumable(weights=work_dir / name, state_dir=state_dir, manifest=manifest)


def read_latest(work_dir: str | os.PathLike) -> str | None:
    """The checkpoint name `latest` points at (None when there is no `latest`)."""
    path = Path(work_dir) / LATEST
    if not path.is_file():
        return None
    name = path.read_text(encoding="utf-8").strip()
    if not _NAME_RE.match(name):
        raise CheckpointError(f"{path}: does not name a checkpoint file (got {name!r})")
    return name


def find_resumable(work_dir: str | os.PathLike) -> Resumable | None:
    """The newest complete checkpoint: `latest` if it verifies, else the highest-step verified one."""
    work_dir = Path(work_dir)
    name = read_latest(work_dir)
    if name is not None:
        found = _verify(work_dir, name)
        if found is not None:
            return found
    return max(_complete(work_dir), key=lambda r: r.step, default=None)


def _complete(work_dir: Path) -> list[Resumable]:
    """Every checkpoint under `train_state/` whose manifest verifies."""
    root = work_dir / TRAIN_STATE_DIR
    if not root.is_dir():
        return []
    found = (_verify(work_dir, d.name + ".pt") for d in root.iterdir() if d.is_dir())
    return [r for r in found if r is not None]


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file from a file path, or a work dir (its `latest`)."""
    path = Path(path)
    if path.is_dir():
        name = read_latest(path)
        if name is None:
            raise CheckpointError(f"{path}: no `latest` file; is this a finished work dir?")
        path = path / name
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    return path


def _load_failure(exc: BaseException) -> str:
    """Why torch.load refused a file, in one line, without torch's advice to retry with
    `weights_only=False` (which would run arbitrary code from a file this process did not write)."""
    text = str(exc)
    if "central directory" in text or "zip archive" in text:
        return "truncated or not a torch checkpoint (its zip archive is incomplete)"
    if "Unsupported global" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        return ("it holds Python objects other than tensors" + (f" ({found.group(1)})" if found else "")
                + ", which a weights-only load refuses to unpickle")
    if "Weights only load failed" in text or "invalid load key" in text or "magic number" in text:
        return "not a torch checkpoint (unrecognised contents)"
    lines = [line.strip() for line in text.splitlines() if line.strip() and "weights_only" not in line]
    return lines[0] if lines else type(exc).__name__


def torch_load_weights_only(path: str | os.PathLike, error: type[Exception] = CheckpointError) -> Any:
    """torch.load(weights_only=True) on CPU; any failure raises `error` naming the file and why."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise error(f"{path}: checkpoint file not found") from None
    except Exception as exc:  # noqa: BLE001 - every unreadable file gets the same clear error
        raise error(f"{path}: cannot load this checkpoint: {_load_failure(exc)}") from None


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A weights-only checkpoint as a state dict (never unpickles arbitrary objects)."""
    path = resolve_checkpoint(path)
    state = torch_load_weights_only(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


def load_train_state_file(resumable: Resumable, filename: str) -> Any:
    path = resumable.state_dir / filename
    if not path.is_file():
        raise CheckpointError(f"{path}: missing from the train state of {resumable.weights.name}")
    # Train state holds numpy RNG state and plain Python values next to tensors; it is our own
    # file, written by the trainer, so full unpickling is acceptable here (never for weights).
    return torch.load(path, map_location="cpu", weights_only=False)


def remove_stale_temp_files(work_dir: str | os.PathLike) -> int:
    """Delete temp files a killed save left behind (`.name.xxx.tmp`); returns how many."""
    work_dir = Path(work_dir)
    removed = 0
    for directory in [work_dir, *(p for p in (work_dir / TRAIN_STATE_DIR).glob("*") if p.is_dir())]:
        if not directory.is_dir():
            continue
        for f in directory.glob(".*.tmp"):
            f.unlink(missing_ok=True)
            removed += 1
    return removed


def _prune_train_states(work_dir: Path, keep: int) -> None:
    if keep <= 0:
        return
    for old in sorted(_complete(work_dir), key=lambda r: r.step)[:-keep]:
        shutil.rmtree(old.state_dir, ignore_errors=True)
