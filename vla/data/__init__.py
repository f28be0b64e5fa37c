"""Data: LeRobot v2.1 reader/writer, ParquetDataset, the training and eval transforms, statistics, collators.

The names below are imported on first use (PEP 562), so a torch-free process (the simulator's
dataset recorder) can use the reader and writer without loading torch. The data types the
configs name (ProcessParquetInputs, ParquetPrompter, ProcessPrompts, ProcessPromptsWithImage,
PretrainedTokenizer, ResizeImages, RandomShiftImages, NormalizeImages, NormalizeStatesAndActions, ParquetDataset,
DistributedRepeatingDataset, DictCollator, and the eval transforms ProcessLiberoEvalInputs,
TransformImage, LiberoPromptFromInputs, LiberoProprioFromInputs, DenormalizeLiberoAction) register with `vla.config.register` when their
modules are imported; the registry imports those modules on a lookup miss.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "DatasetError": "vla.data.errors",
    "TransformError": "vla.data.errors",
    "LeRobotReader": "vla.data.reader",
    "LeRobotWriter": "vla.data.writer",
    "compute_dataset_statistics": "vla.data.statistics",
    "write_dataset_statistics": "vla.data.statistics",
    "DictCollator": "vla.data.collate",
    "DistributedRepeatingDataset": "vla.data.distributed",
    "ParquetDataset": "vla.data.parquet_dataset",
    "PretrainedTokenizer": "vla.data.tokenizer",
    "NormalizeImages": "vla.data.transforms",
    "NormalizeStatesAndActions": "vla.data.transforms",
    "ParquetPrompter": "vla.data.transforms",
    "ProcessParquetInputs": "vla.data.transforms",
    "ProcessPrompts": "vla.data.transforms",
    "ProcessPromptsWithImage": "vla.data.transforms",
    "ResizeImages": "vla.data.transforms",
    "RandomShiftImages": "vla.data.transforms",
    "DenormalizeLiberoAction": "vla.data.eval_transforms",
    "LiberoPromptFromInputs": "vla.data.eval_transforms",
    "LiberoProprioFromInputs": "vla.data.eval_transforms",
    "ProcessLiberoEvalInputs": "vla.data.eval_transforms",
    "TransformImage": "vla.data.eval_transforms",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vla.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
