"""Data: LeRobot v2.1 reader/writer, ParquetDataset and the seed's transforms, statistics, collators.

Importing this package registers the seed's data types with `vla.config.register`
(ProcessParquetInputs, ParquetPrompter, ProcessPrompts, ProcessPromptsWithImage,
PretrainedTokenizer, ResizeImages, NormalizeImages, NormalizeStatesAndActions,
ParquetDataset, DistributedRepeatingDataset, DictCollator).
"""
from vla.data.collate import DictCollator
from vla.data.distributed import DistributedRepeatingDataset
from vla.data.errors import DatasetError
from vla.data.parquet_dataset import ParquetDataset
from vla.data.reader import LeRobotReader
from vla.data.statistics import compute_dataset_statistics, write_dataset_statistics
from vla.data.tokenizer import PretrainedTokenizer
from vla.data.transforms import (NormalizeImages, NormalizeStatesAndActions, ParquetPrompter, ProcessParquetInputs,
                                 ProcessPrompts, ProcessPromptsWithImage, ResizeImages)
from vla.data.writer import LeRobotWriter

__all__ = [
    "DatasetError", "DictCollator", "DistributedRepeatingDataset", "LeRobotReader", "LeRobotWriter",
    "NormalizeImages", "NormalizeStatesAndActions", "ParquetDataset", "ParquetPrompter", "PretrainedTokenizer",
    "ProcessParquetInputs", "ProcessPrompts", "ProcessPromptsWithImage", "ResizeImages",
    "compute_dataset_statistics", "write_dataset_statistics",
]
