"""Data: LeRobot v2.1 reader/writer, ParquetDataset and the seed's transforms, statistics, collators.

Importing this package registers the seed's data types with `vla.config.register`.
"""
from vla.data.errors import DatasetError
from vla.data.reader import LeRobotReader
from vla.data.tokenizer import PretrainedTokenizer
from vla.data.writer import LeRobotWriter

__all__ = ["DatasetError", "LeRobotReader", "LeRobotWriter", "PretrainedTokenizer"]
